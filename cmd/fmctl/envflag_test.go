package main

import (
	"testing"

	"github.com/spf13/cobra"
)

// TestEnvFlagPrecedence: --flag beats the environment, which beats the
// built-in default; the help names the variable.
func TestEnvFlagPrecedence(t *testing.T) {
	parse := func(env string, args ...string) (string, *cobra.Command) {
		t.Setenv("FMTRAIN_TEST_URL", env)
		cmd := &cobra.Command{Use: "x"}
		v := addEnvFlag(cmd, "url", "FMTRAIN_TEST_URL", "builtin", "where to go")
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		return *v, cmd
	}
	if v, cmd := parse(""); v != "builtin" || cmd.Flags().Lookup("url").Usage != "where to go (env FMTRAIN_TEST_URL)" {
		t.Fatalf("no env, no flag: %q, usage %q", v, cmd.Flags().Lookup("url").Usage)
	}
	if v, _ := parse("from-env"); v != "from-env" {
		t.Fatalf("env only: %q, want from-env", v)
	}
	if v, _ := parse("from-env", "--url", "from-flag"); v != "from-flag" {
		t.Fatalf("env and flag: %q, want from-flag", v)
	}
}
