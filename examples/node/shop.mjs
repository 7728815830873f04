// A Node.js "shop" instrumented with the OpenTelemetry JS SDK — nothing
// Tangram-specific — exporting its traces, metrics and logs over
// OTLP/HTTP (protobuf) to the collector at OTEL_EXPORTER_OTLP_ENDPOINT
// (Tangram's: http://127.0.0.1:4318). It handles one order: a server span
// with a client span under it, a log record written under the client
// span, a counter and a histogram; then it flushes everything and prints
// the trace's ID.
import { context, trace, SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { SeverityNumber } from '@opentelemetry/api-logs';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-proto';
import { LoggerProvider, BatchLogRecordProcessor } from '@opentelemetry/sdk-logs';
import { OTLPLogExporter } from '@opentelemetry/exporter-logs-otlp-proto';

const endpoint = process.env.OTEL_EXPORTER_OTLP_ENDPOINT ?? 'http://127.0.0.1:4318';
const resource = resourceFromAttributes({ 'service.name': 'node-shop', 'service.instance.id': 'node-1' });

const tracerProvider = new BasicTracerProvider({
  resource,
  spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: `${endpoint}/v1/traces` }))],
});
const meterProvider = new MeterProvider({
  resource,
  readers: [new PeriodicExportingMetricReader({ exporter: new OTLPMetricExporter({ url: `${endpoint}/v1/metrics` }), exportIntervalMillis: 60000 })],
});
const loggerProvider = new LoggerProvider({
  resource,
  processors: [new BatchLogRecordProcessor(new OTLPLogExporter({ url: `${endpoint}/v1/logs` }))],
});

const tracer = tracerProvider.getTracer('shop');
const meter = meterProvider.getMeter('shop');
const logger = loggerProvider.getLogger('shop');
const orders = meter.createCounter('shop_orders', { description: 'Orders taken.' });
const amount = meter.createHistogram('shop_order_amount', { description: 'Order amounts.' });

const server = tracer.startSpan('POST /orders', { kind: SpanKind.SERVER, attributes: { 'http.route': '/orders' } });
const inServer = trace.setSpan(context.active(), server);
const call = tracer.startSpan('stock.Reserve', { kind: SpanKind.CLIENT, attributes: { 'rpc.system': 'tangram' } }, inServer);
logger.emit({
  severityNumber: SeverityNumber.WARN, severityText: 'WARN', body: 'stock low for sku 42',
  attributes: { sku: '42' }, context: trace.setSpan(context.active(), call),
});
call.setStatus({ code: SpanStatusCode.ERROR, message: 'out of stock' });
call.end();
server.end();
orders.add(3, { channel: 'web' });
for (const v of [5, 12, 40]) amount.record(v, { channel: 'web' });

await Promise.all([tracerProvider.shutdown(), meterProvider.shutdown(), loggerProvider.shutdown()]);
console.log(`trace ${server.spanContext().traceId}`);
