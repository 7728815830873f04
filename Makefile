# Tangram — the two commands that matter: `make run` (or `go run ./cmd/tangram server`) and `make test`.
GO ?= go
RACE_PKGS := ./config/... ./internal/park/... ./internal/store/... ./rpc/... ./registry/... ./job/... ./mq/... ./kv/... ./lock/... ./idgen/... ./cache/... ./txn/... ./shard/... ./trace/...

.PHONY: run build test test-short lint bench services fuzz robustness tour

run:
	$(GO) run ./cmd/tangram server

build:
	$(GO) build -o bin/tangram ./cmd/tangram
	CGO_ENABLED=0 $(GO) build -o bin/tangram-oci ./cmd/tangram-oci

services:
	bash scripts/services.sh

# Every stage runs to its end even when an earlier one failed; the failed
# ones are listed at the end. ./... is this module's packages (the
# benchmarks are their own module, joined by go.work): a scratch package
# left in the tree is compiled and tested too — keep scratch work outside.
test: services
	bash scripts/stages.sh \
	  "vet" "$(GO) vet ./... && $(GO) vet ./bench/..." \
	  "unit and integration tests" "$(GO) test -count=1 -timeout 15m ./... ./bench/internal/... && KV_TEST_IOLOOPS=-1 $(GO) test -count=1 ./kv/server/" \
	  "race detector" "$(GO) test -count=1 -race -timeout 15m $(RACE_PKGS)" \
	  "API suites on PostgreSQL" "TANGRAM_TEST_STORE=postgres $(GO) test -count=1 -timeout 15m ./config/... ./job/... ./lock/server/ ./idgen/server/ ./txn/server/ ./cmd/..." \
	  "API suites on MariaDB" "TANGRAM_TEST_STORE=mysql $(GO) test -count=1 -timeout 15m ./config/... ./job/... ./lock/server/ ./idgen/server/ ./txn/server/ ./cmd/..."

# The README's tour, every command as written, against a fresh copy of the
# repository (make test runs it too).
tour:
	$(GO) test -count=1 -v -run '^TestREADMETour$$' ./cmd/tangram/

# The robustness suite, long versions (make test runs each short): kill -9
# loops, pauses, partitions, power-loss ordering. Each prints its figures
# on a "robustness:" line.
ROBUST_TESTS := TestJobsNoDoubleFireUnderKill9|TestKill9DuringPublishes|TestBrokerKill9KeepsAcknowledged|TestOrderedConsumerKilledHandsOverFast|TestConsumerKilledMidBatchIsRedelivered|TestNewFilesAreDurableBeforeAcks|TestPartitionThreeZones|TestRegistryPartitionInNetns|TestCoordinatorKill9UnderLoad
robustness: services
	TANGRAM_ROBUSTNESS=long bash -o pipefail -c '$(GO) test -count=1 -v -timeout 60m -run "^($(ROBUST_TESTS))$$" ./server/ ./mq/... ./registry/... ./txn/... ./cmd/... | grep -E "^(--- |ok|FAIL|PASS)|robustness:"'

test-short:
	$(GO) test -count=1 -short ./...

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./... ./bench/...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

bench:
	$(GO) run ./bench/config -quick
	$(GO) run ./bench/rpc -quick
	$(GO) run ./bench/registry -quick
	$(GO) run ./bench/job -quick
	$(GO) run ./bench/mq -quick
	$(GO) run ./bench/kv -quick
	$(GO) run ./bench/lock -quick
	$(GO) run ./bench/idgen -quick
	$(GO) run ./bench/cache -quick

fuzz:
	$(GO) test ./rpc -run '^$$' -fuzz FuzzFrame -fuzztime 30s
	$(GO) test ./rpc/codec -run '^$$' -fuzz FuzzMsgpack -fuzztime 30s
	$(GO) test ./registry -run '^$$' -fuzz FuzzGossipMessage -fuzztime 30s
	$(GO) test ./job -run '^$$' -fuzz FuzzJobJSON -fuzztime 30s
	$(GO) test ./mq/store -run '^$$' -fuzz FuzzRecord -fuzztime 30s
	$(GO) test ./kv/resp -run '^$$' -fuzz FuzzReadCommand -fuzztime 30s
	$(GO) test ./kv/resp -run '^$$' -fuzz FuzzParse -fuzztime 30s
	$(GO) test ./mq/wire -run '^$$' -fuzz FuzzSendRequest -fuzztime 30s
	$(GO) test ./mq/wire -run '^$$' -fuzz FuzzParseID -fuzztime 30s
	$(GO) test ./config -run '^$$' -fuzz FuzzParseProperties -fuzztime 30s
	$(GO) test ./config -run '^$$' -fuzz FuzzValidate -fuzztime 30s
	$(GO) test ./txn/at -run '^$$' -fuzz FuzzPlan -fuzztime 30s
	$(GO) test ./txn/at -run '^$$' -fuzz FuzzUndoLog -fuzztime 30s
	$(GO) test ./txn -run '^$$' -fuzz FuzzParseTarget -fuzztime 30s
	$(GO) test ./shard -run '^$$' -fuzz FuzzParseRules -fuzztime 30s
	$(GO) test ./shard -run '^$$' -fuzz FuzzTemplate -fuzztime 30s
	$(GO) test ./container/image -run '^$$' -fuzz FuzzExtractLayer -fuzztime 30s
	$(GO) test ./container -run '^$$' -fuzz FuzzDecodeSpec -fuzztime 30s
	$(GO) test ./container -run '^$$' -fuzz FuzzDecodeState -fuzztime 30s
	$(GO) test ./trace/store -run '^$$' -fuzz FuzzDecodeSpan -fuzztime 30s
	$(GO) test ./trace/otlp -run '^$$' -fuzz 'FuzzDecodeTraces$$' -fuzztime 30s
	$(GO) test ./trace/otlp -run '^$$' -fuzz FuzzDecodeTracesJSON -fuzztime 30s
	$(GO) test ./trace/server -run '^$$' -fuzz FuzzGRPCMessage -fuzztime 30s
	$(GO) test ./shard -run '^$$' -fuzz FuzzRoute -fuzztime 30s
	$(GO) test ./shard/proxy -run '^$$' -fuzz FuzzPacket -fuzztime 30s
	$(GO) test ./shard/proxy -run '^$$' -fuzz FuzzHandshakeResponse -fuzztime 30s
	$(GO) test ./shard/proxy -run '^$$' -fuzz FuzzExecuteArgs -fuzztime 30s
