package proxy

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/tangram-dev/tangram/shard"
)

// Commands.
const (
	comQuit             = 0x01
	comInitDB           = 0x02
	comQuery            = 0x03
	comFieldList        = 0x04
	comPing             = 0x0e
	comStmtPrepare      = 0x16
	comStmtExecute      = 0x17
	comStmtSendLongData = 0x18
	comStmtClose        = 0x19
	comStmtReset        = 0x1a
	comSetOption        = 0x1b
	comResetConnection  = 0x1f
)

// session is one client connection's state.
type session struct {
	s          *Server
	pc         *packetConn
	id         uint32
	user       string
	db         string
	autocommit bool
	tx         *shard.Tx
	txOpts     sql.TxOptions // for the transactions to come
	oneShot    oneShot       // SET TRANSACTION without SESSION
	stmts      map[uint32]*prepared
	nextStmt   uint32
}

// oneShot is an isolation level for the next transaction only.
type oneShot struct {
	Isolation sql.IsolationLevel
	set       bool
}

// prepared is a prepared statement.
type prepared struct {
	query  string
	kind   kind
	params int
	types  []uint16       // the parameters' types, as last bound
	long   map[int][]byte // data sent with COM_STMT_SEND_LONG_DATA
	// longErr: the long data outgrew the packet limit.
	longErr bool
}

// sqlError is an error as the client is told it.
type sqlError struct {
	code  uint16
	state string
	msg   string
}

func (e *sqlError) Error() string { return e.msg }

func errorf(code uint16, state, format string, a ...any) error {
	return &sqlError{code: code, state: state, msg: fmt.Sprintf(format, a...)}
}

// notSupported is the error for what the proxy refuses (1235,
// ER_NOT_SUPPORTED_YET).
func notSupported(format string, a ...any) error {
	return &sqlError{code: 1235, state: "42000", msg: "shard: not supported: " + fmt.Sprintf(format, a...)}
}

// appendError appends err as an ERR packet: the data source's own code
// when it came from one, 1235 for SQL the router refuses, 1064 for
// syntax errors.
func appendError(b []byte, err error) []byte {
	var se *sqlError
	var me *mysql.MySQLError
	switch {
	case errors.As(err, &se):
		return appendErr(b, se.code, se.state, se.msg)
	case errors.As(err, &me):
		state := string(me.SQLState[:])
		if me.SQLState == [5]byte{} {
			state = "HY000"
		}
		return appendErr(b, me.Number, state, err.Error())
	case errors.Is(err, shard.ErrUnsupported):
		return appendErr(b, 1235, "42000", err.Error())
	case errors.Is(err, shard.ErrSyntax):
		return appendErr(b, 1064, "42000", err.Error())
	case errors.Is(err, shard.ErrUnknownTable):
		return appendErr(b, 1146, "42S02", err.Error())
	case errors.Is(err, sql.ErrTxDone):
		return appendErr(b, 1105, "HY000", "shard: the transaction is over")
	default:
		return appendErr(b, 1105, "HY000", err.Error())
	}
}

// status is the server status the client is told in OK and EOF packets.
func (ss *session) status() uint16 {
	var st uint16
	if ss.autocommit {
		st |= statusAutocommit
	}
	if ss.tx != nil {
		st |= statusInTrans
	}
	return st
}

func (ss *session) appendOK(b []byte, affected, lastID uint64) []byte {
	b = append(b, 0)
	b = appendLenInt(b, affected)
	b = appendLenInt(b, lastID)
	b = appendU16(b, ss.status())
	return appendU16(b, 0)
}

func (ss *session) appendEOF(b []byte) []byte {
	b = append(b, 0xfe, 0, 0)
	return appendU16(b, ss.status())
}

func (ss *session) sendOK(affected, lastID uint64) error {
	return ss.pc.send(ss.appendOK(ss.pc.begin(), affected, lastID))
}

func (ss *session) sendError(err error) error {
	return ss.pc.send(appendError(ss.pc.begin(), err))
}

// close ends the session: its transaction rolls back.
func (ss *session) close() {
	if ss.tx != nil {
		_ = ss.tx.Rollback()
		ss.tx = nil
	}
}

// command runs one command; quit reports the client said goodbye, err a
// connection that cannot go on.
func (ss *session) command(p []byte) (quit bool, err error) {
	// Statements run without a cancellable context: with one, every
	// query costs database/sql a goroutine and the MySQL driver two
	// channel hand-offs (about a sixth of the proxy's CPU on a point select).
	// A statement in flight when the server closes runs to its end,
	// bounded by the data source's readTimeout.
	ctx := context.Background()
	body := p[1:]
	switch p[0] {
	case comQuit:
		return true, nil
	case comPing:
		return false, ss.sendOK(0, 0)
	case comInitDB:
		if err := ss.use(string(body)); err != nil {
			return false, ss.sendError(err)
		}
		return false, ss.sendOK(0, 0)
	case comQuery:
		return false, ss.query(ctx, string(body))
	case comFieldList:
		// The command line's completion asks for columns; it gets none.
		return false, ss.pc.send(ss.appendEOF(ss.pc.begin()))
	case comStmtPrepare:
		return false, ss.prepare(ctx, string(body))
	case comStmtExecute:
		return false, ss.execute(ctx, body)
	case comStmtSendLongData:
		r := reader{b: body}
		id, param := r.u32("statement id"), int(r.u16("parameter"))
		if st := ss.stmts[id]; st != nil && r.err == nil && param < st.params {
			if st.long == nil {
				st.long = map[int][]byte{}
			}
			if len(st.long[param])+len(r.b) > ss.s.cfg.MaxPacket {
				// Refused when the statement runs (this command has no
				// answer of its own).
				st.longErr = true
			} else {
				st.long[param] = append(st.long[param], r.b...)
			}
		}
		return false, nil // no answer, as MySQL
	case comStmtClose:
		r := reader{b: body}
		delete(ss.stmts, r.u32("statement id"))
		return false, nil // no answer
	case comStmtReset:
		r := reader{b: body}
		st := ss.stmts[r.u32("statement id")]
		if st == nil {
			return false, ss.sendError(errorf(1243, "HY000", "Unknown prepared statement handler given to mysqld_stmt_reset"))
		}
		st.long, st.longErr = nil, false
		return false, ss.sendOK(0, 0)
	case comSetOption:
		r := reader{b: body}
		if r.u16("option") == 0 { // MYSQL_OPTION_MULTI_STATEMENTS_ON
			return false, ss.sendError(notSupported("multi-statements (send statements one at a time)"))
		}
		return false, ss.pc.send(ss.appendEOF(ss.pc.begin()))
	case comResetConnection:
		ss.close()
		ss.autocommit, ss.txOpts, ss.oneShot = true, sql.TxOptions{}, oneShot{}
		clear(ss.stmts)
		return false, ss.sendOK(0, 0)
	default:
		return false, ss.sendError(errorf(1047, "08S01", "Unknown command 0x%02x", p[0]))
	}
}

// use switches the current schema: the proxy has one.
func (ss *session) use(db string) error {
	db = strings.Trim(strings.TrimSpace(db), "`")
	if !strings.EqualFold(db, ss.s.cfg.Database) {
		return errorf(1049, "42000", "Unknown database '%s'", db)
	}
	ss.db = ss.s.cfg.Database
	return nil
}

// query runs a COM_QUERY and sends its answer.
func (ss *session) query(ctx context.Context, q string) error {
	k := classify(q)
	rows, res, err := ss.run(ctx, q, k, nil)
	if err != nil {
		return ss.sendError(err)
	}
	if rows == nil {
		return ss.sendOK(uint64(res.RowsAffected), uint64(res.LastInsertID))
	}
	return ss.sendRows(rows, false)
}

// run runs a statement: the session's own (transactions, SET, USE,
// SHOW) here, the rest through the executor (in the session's
// transaction when it has one).
func (ss *session) run(ctx context.Context, q string, k kind, args []any) (*shard.Cursor, shard.Result, error) {
	var none shard.Result
	switch k {
	case kindEmpty:
		return nil, none, errorf(1065, "42000", "Query was empty")
	case kindOther:
		return nil, none, refuse(q)
	case kindBegin:
		return nil, none, ss.beginStmt(ctx, q)
	case kindDDL:
		// DDL commits the open transaction first, as in MySQL, and runs
		// on every data node of its table (not atomically across them:
		// an error names the data sources it did run on).
		if err := ss.endTx(true); err != nil {
			return nil, none, err
		}
		res, err := ss.s.ex.Load().Exec(ctx, q, args...)
		return nil, res, err
	case kindCommit:
		return nil, none, ss.endTx(true)
	case kindRollback:
		return nil, none, ss.endTx(false)
	case kindSet:
		return nil, none, ss.set(q)
	case kindUse:
		return nil, none, ss.use(strings.TrimSpace(q[strings.IndexFunc(q, isSpace):]))
	case kindShow:
		rows, err := ss.show(ctx, q)
		if err != nil {
			return nil, none, err
		}
		return shard.RowsCursor(rows), none, nil
	}
	if ss.tx == nil && !ss.autocommit {
		if err := ss.begin(ctx); err != nil {
			return nil, none, err
		}
	}
	if k == kindQuery {
		// Outside a transaction a query one data node answers whole is
		// streamed to the client as the data source sends it.
		var rows *shard.Cursor
		var err error
		if ss.tx != nil {
			rows, err = ss.tx.Cursor(ctx, q, args...)
		} else {
			rows, err = ss.s.ex.Load().Cursor(ctx, q, args...)
		}
		return rows, none, err
	}
	var res shard.Result
	var err error
	if ss.tx != nil {
		res, err = ss.tx.Exec(ctx, q, args...)
	} else {
		res, err = ss.s.ex.Load().Exec(ctx, q, args...)
	}
	return nil, res, err
}

// begin opens the transaction a statement needs with autocommit off.
func (ss *session) begin(ctx context.Context) error {
	tx, err := ss.s.ex.Load().Begin(ctx, ss.nextTxOpts())
	if err != nil {
		return err
	}
	ss.tx = tx
	return nil
}

// nextTxOpts are the options of the next transaction: the session's,
// with a SET TRANSACTION ISOLATION LEVEL (no SESSION) for this one only.
func (ss *session) nextTxOpts() *sql.TxOptions {
	opts := ss.txOpts
	if ss.oneShot.set {
		opts.Isolation = ss.oneShot.Isolation
		ss.oneShot.set = false
	}
	return &opts
}

// endTx commits or rolls back the session's transaction (nothing to do
// without one, as in MySQL).
func (ss *session) endTx(commit bool) error {
	tx := ss.tx
	if tx == nil {
		return nil
	}
	ss.tx = nil
	if commit {
		return tx.Commit()
	}
	return tx.Rollback()
}

// sendRows sends a result set, and closes rows: text rows for COM_QUERY,
// binary rows for COM_STMT_EXECUTE. A value that cannot be sent, or a
// data source failing while its rows stream, ends the rows with an error,
// as a server does when a statement fails while sending.
func (ss *session) sendRows(rows *shard.Cursor, bin bool) error {
	defer rows.Close()
	pc := ss.pc
	cols := describe(rows.Columns, rows.Types())
	if err := pc.send(appendLenInt(pc.begin(), uint64(len(cols)))); err != nil {
		return err
	}
	for _, c := range cols {
		if err := pc.send(appendColumn(pc.begin(), ss.s.cfg.Database, "", c)); err != nil {
			return err
		}
	}
	if err := pc.send(ss.appendEOF(pc.begin())); err != nil {
		return err
	}
	r := make([]any, len(cols))
	for {
		err := rows.Next(r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return pc.send(appendError(pc.begin(), err))
		}
		b, err := appendRow(pc.begin(), r, cols, bin)
		if err != nil {
			return pc.send(appendError(pc.begin(), err))
		}
		if err := pc.send(b); err != nil {
			return err
		}
	}
	return pc.send(ss.appendEOF(pc.begin()))
}

// describe returns the protocol's columns of a result.
func describe(names []string, types []*sql.ColumnType) []column {
	cols := make([]column, len(names))
	for i, name := range names {
		var ct *sql.ColumnType
		if i < len(types) {
			ct = types[i]
		}
		cols[i] = columnOf(name, ct)
	}
	return cols
}

// appendRow appends one row in the text or the binary protocol.
func appendRow(b []byte, r []any, cols []column, bin bool) ([]byte, error) {
	var err error
	if !bin {
		for i, v := range r {
			if b, err = appendText(b, v, cols[i]); err != nil {
				return b, err
			}
		}
		return b, nil
	}
	// 0x00, a NULL bitmap with an offset of 2 bits, the non-NULL values.
	b = append(b, 0)
	at := len(b)
	b = append(b, make([]byte, (len(r)+7+2)/8)...)
	for i, v := range r {
		if v == nil {
			b[at+(i+2)/8] |= 1 << ((i + 2) % 8)
			continue
		}
		if b, err = appendBinary(b, v, cols[i]); err != nil {
			return b, err
		}
	}
	return b, nil
}

// prepare answers COM_STMT_PREPARE: the statement is parsed and planned
// now (its errors are the client's at once), its parameters counted and
// a SELECT's columns described (clients decide from them whether an
// execution returns rows; each execution describes them again).
func (ss *session) prepare(ctx context.Context, q string) error {
	k := classify(q)
	st := &prepared{query: q, kind: k}
	var cols *shard.Rows
	var err error
	switch k {
	case kindEmpty:
		return ss.sendError(errorf(1065, "42000", "Query was empty"))
	case kindOther:
		return ss.sendError(refuse(q))
	case kindQuery, kindWrite, kindDDL:
		n, err := ss.s.ex.Load().Router().Params(q)
		if err != nil {
			return ss.sendError(err)
		}
		st.params = n
		if k == kindQuery {
			if cols, err = ss.s.ex.Load().Describe(ctx, q); err != nil {
				return ss.sendError(err)
			}
		}
	case kindShow:
		if strings.Contains(q, "?") {
			return ss.sendError(notSupported("parameters in SHOW"))
		}
		if cols, err = ss.show(ctx, q); err != nil {
			return ss.sendError(err)
		}
	default:
		if strings.Contains(q, "?") {
			return ss.sendError(notSupported("parameters in %s", strings.ToUpper(firstWord(q))))
		}
	}
	if len(ss.stmts) >= 16382 { // MySQL's max_prepared_stmt_count default
		return ss.sendError(errorf(1461, "42000", "Can't create more than max_prepared_stmt_count statements (current value: 16382)"))
	}
	ss.nextStmt++
	id := ss.nextStmt
	ss.stmts[id] = st
	pc := ss.pc
	b := append(pc.begin(), 0)
	b = appendU32(b, id)
	ncols := 0
	if cols != nil {
		ncols = len(cols.Columns)
	}
	b = appendU16(b, uint16(ncols))
	b = appendU16(b, uint16(st.params))
	b = append(b, 0)
	b = appendU16(b, 0)
	if err := pc.send(b); err != nil {
		return err
	}
	if st.params > 0 {
		for range st.params {
			if err := pc.send(appendColumn(pc.begin(), "", "", column{name: "?", typ: typeVarString, charset: charsetBinary, flags: flagBinary})); err != nil {
				return err
			}
		}
		if err := pc.send(ss.appendEOF(pc.begin())); err != nil {
			return err
		}
	}
	if ncols > 0 {
		for _, c := range describe(cols.Columns, cols.Types) {
			if err := pc.send(appendColumn(pc.begin(), ss.s.cfg.Database, "", c)); err != nil {
				return err
			}
		}
		return pc.send(ss.appendEOF(pc.begin()))
	}
	return nil
}

// execute answers COM_STMT_EXECUTE.
func (ss *session) execute(ctx context.Context, body []byte) error {
	r := reader{b: body}
	id := r.u32("statement id")
	r.u8("flags")
	r.u32("iteration count")
	if r.err != nil {
		return ss.sendError(errorf(1835, "HY000", "%v", r.err))
	}
	st := ss.stmts[id]
	if st == nil {
		return ss.sendError(errorf(1243, "HY000", "Unknown prepared statement handler (%d) given to mysqld_stmt_execute", id))
	}
	if st.longErr {
		st.long, st.longErr = nil, false
		return ss.sendError(errorf(1153, "08S01", "Got a packet bigger than 'max_allowed_packet' bytes (long data)"))
	}
	args, err := st.decodeArgs(&r)
	if err != nil {
		return ss.sendError(errorf(1835, "HY000", "%v", err))
	}
	st.long = nil
	rows, res, err := ss.run(ctx, st.query, st.kind, args)
	if err != nil {
		return ss.sendError(err)
	}
	if rows == nil {
		return ss.sendOK(uint64(res.RowsAffected), uint64(res.LastInsertID))
	}
	return ss.sendRows(rows, true)
}

// decodeArgs reads an execution's parameters: a NULL bitmap, whether
// types follow (they do on the first execution and whenever they
// change), the types, then the values.
func (st *prepared) decodeArgs(r *reader) ([]any, error) {
	if st.params == 0 {
		return nil, nil
	}
	nulls := r.bytes((st.params+7)/8, "NULL bitmap")
	if r.u8("new-params-bound flag") == 1 {
		types := make([]uint16, st.params)
		for i := range types {
			types[i] = r.u16("parameter type")
		}
		st.types = types
	}
	if r.err != nil {
		return nil, r.err
	}
	if st.types == nil {
		return nil, errors.New("proxy: the statement's parameter types were never sent")
	}
	args := make([]any, st.params)
	for i := range args {
		if nulls[i/8]&(1<<(i%8)) != 0 {
			continue
		}
		if d, ok := st.long[i]; ok {
			if byte(st.types[i]) >= typeTinyBlob && byte(st.types[i]) <= typeBlob {
				args[i] = d
			} else {
				args[i] = string(d)
			}
			continue
		}
		args[i] = readParam(r, st.types[i])
	}
	if r.err != nil {
		return nil, r.err
	}
	return args, nil
}
