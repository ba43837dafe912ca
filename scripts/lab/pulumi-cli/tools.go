//go:build tools

// Package pulumicli pins the Go modules that scripts/lab/pulumi-cli/build.sh
// builds the Pulumi CLI from. It is never compiled: the build tag keeps it out
// of every build, and the blank import keeps `go mod tidy` from dropping the
// requirement. See build.sh and MEASURED.md beside this file.
package pulumicli

import (
	_ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
	// The package whose Version variable build.sh sets with -ldflags -X.
	_ "github.com/pulumi/pulumi/sdk/v3/go/common/version"
)
