package main

import (
	"os"

	"github.com/spf13/cobra"
)

// addEnvFlag adds the string flag --name to cmd whose default is the
// environment variable env when set, else def, and returns where its value
// lands; the flag beats the environment, which beats the built-in default.
func addEnvFlag(cmd *cobra.Command, name, env, def, usage string) *string {
	if v := os.Getenv(env); v != "" {
		def = v
	}
	return cmd.Flags().String(name, def, usage+" (env "+env+")")
}
