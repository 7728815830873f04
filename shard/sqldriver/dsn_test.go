package sqldriver

import (
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// A data source URL's parameters are the MySQL driver's options where
// it has one of that name, session variables otherwise.
func TestMySQLDSN(t *testing.T) {
	dsn, err := mysqlDSN("mysql://app:p%40ss@127.0.0.1:3306/ds_0?readTimeout=30s&sql_mode=%27ANSI%27")
	if err != nil {
		t.Fatal(err)
	}
	mc, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if mc.User != "app" || mc.Passwd != "p@ss" || mc.Addr != "127.0.0.1:3306" || mc.DBName != "ds_0" {
		t.Errorf("user %q password %q addr %q db %q", mc.User, mc.Passwd, mc.Addr, mc.DBName)
	}
	if mc.ReadTimeout != 30*time.Second || !mc.ParseTime {
		t.Errorf("readTimeout %v parseTime %v: want 30s, true", mc.ReadTimeout, mc.ParseTime)
	}
	if mc.Params["sql_mode"] != "'ANSI'" || mc.Params["readTimeout"] != "" {
		t.Errorf("session variables %v: want sql_mode alone", mc.Params)
	}
	if _, err := mysqlDSN("mysql://app@127.0.0.1:3306/ds_0?readTimeout=soon"); err == nil || !strings.Contains(err.Error(), "readTimeout") && !strings.Contains(err.Error(), "soon") {
		t.Errorf("a bad readTimeout: %v, want an error naming it", err)
	}
	if _, err := mysqlDSN("postgres://x@y/z"); err == nil {
		t.Error("a postgres URL was taken")
	}
}
