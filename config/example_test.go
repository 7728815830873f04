package config_test

import (
	"fmt"

	"github.com/tangram-dev/tangram/config"
)

func ExampleParseProperties() {
	kvs, err := config.ParseProperties("# database\ndb.url = jdbc:mysql://db/app\ndb.pool=10\ngreeting=hello\\nworld\n")
	if err != nil {
		panic(err)
	}
	for _, kv := range kvs {
		fmt.Printf("%s=%q\n", kv.Key, kv.Value)
	}
	_, err = config.ParseProperties("ok=1\nbad*key=2\n")
	fmt.Println(err)
	// Output:
	// db.url="jdbc:mysql://db/app"
	// db.pool="10"
	// greeting="hello\nworld"
	// invalid properties at line 2: config: invalid: key "bad*key" must be 1-191 characters of letters, digits and . _ - / [ ] @ $
}

func ExampleRules_Match() {
	rules := config.Rules{IPs: []string{"10.0.0.0/8"}, Labels: []string{"canary"}}
	ns := config.Coord{Env: "prod", App: "shop", Cluster: "default", NS: "application"}
	fmt.Println(rules.Match(ns, config.Peer{IP: "10.1.2.3"}))
	fmt.Println(rules.Match(ns, config.Peer{IP: "192.168.0.1", Labels: []string{"canary"}}))
	fmt.Println(rules.Match(ns, config.Peer{IP: "192.168.0.1"}))
	// Output:
	// true
	// true
	// false
}

func ExampleValidate() {
	fmt.Println(config.Validate(config.JSON, "{\n  \"port\": 8080,\n  \"debug\": tru\n}"))
	// Output:
	// invalid json at line 3: invalid character '\n' in literal true (expecting 'e')
}
