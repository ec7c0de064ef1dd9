package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// Three distinct tokens, so a test can tell which source won.
const (
	fileToken = "WRN-1-00000000000000000000000000000000000000000000000000000000000000f1-0123456789abcdef0123456789abcdef"
	flagToken = "WRN-1-00000000000000000000000000000000000000000000000000000000000000f2-0123456789abcdef0123456789abcdef"
	envToken  = "WRN-1-00000000000000000000000000000000000000000000000000000000000000f3-0123456789abcdef0123456789abcdef"
)

// runJoinTokenOf runs `warren cluster join ARGS... 10.0.0.1` through the
// real app and flags, with the action replaced by joinTokenOf alone, so no
// node starts. It returns the token, what joinTokenOf printed on stderr
// and its error.
func runJoinTokenOf(t *testing.T, args []string) (token, stderr string, err error) {
	t.Helper()
	app := newApp()
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	join := find(find(app.Commands, "cluster").Subcommands, "join")
	if join == nil {
		t.Fatal("no `cluster join` command")
	}
	join.Action = func(c *cli.Context) error {
		token, err = joinTokenOf(c)
		return nil
	}
	// joinTokenOf warns on os.Stderr; catch it in a file.
	f, ferr := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if ferr != nil {
		t.Fatal(ferr)
	}
	defer f.Close()
	saved := os.Stderr
	os.Stderr = f
	runErr := app.Run(interspersed(app, append(append([]string{"warren", "cluster", "join"}, args...), "10.0.0.1")))
	os.Stderr = saved
	if runErr != nil {
		t.Fatalf("run: %v", runErr)
	}
	out, _ := os.ReadFile(f.Name())
	return token, string(out), err
}

// writeJoinedNode makes dataDir look like the data dir of a node that has
// joined: what host.ReadNodeFile accepts as one to resume.
func writeJoinedNode(t *testing.T, dataDir string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dataDir, "certs"), 0o700); err != nil {
		t.Fatal(err)
	}
	nf := `{"format": 1, "cluster_id": "c0ffee", "node_id": "n0de", "role": "worker"}`
	if err := os.WriteFile(filepath.Join(dataDir, "node.json"), []byte(nf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "certs", "node.pem"), []byte("cert"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestJoinTokenOf pins where `cluster join` takes its token from:
// --token-file, else --token, else WARREN_JOIN_TOKEN; --token-file and
// --token together are refused; a named file that cannot be read is an
// error (never a fall back to the environment) unless the node already
// joined, which resumes without any token.
func TestJoinTokenOf(t *testing.T) {
	type file int
	const (
		noFile      file = iota
		privateFile      // mode 0600, the token with whitespace around it
		sharedFile       // mode 0644
		emptyFile
		missingFile // --token-file names a file that does not exist
	)
	cases := []struct {
		name     string
		file     file
		flag     bool   // --token flagToken
		env      string // WARREN_JOIN_TOKEN
		joined   bool   // the data dir holds a joined node
		want     string
		wantErr  string // substring of the error; "" for none
		wantWarn string // substring of stderr; "" for nothing printed
	}{
		{name: "token file", file: privateFile, want: fileToken},
		{name: "token file readable by others warns", file: sharedFile, want: fileToken, wantWarn: "readable by other users"},
		{name: "environment", env: "  " + envToken + "\n", want: envToken},
		{name: "--token", flag: true, want: flagToken},
		{name: "token file wins over the environment", file: privateFile, env: envToken, want: fileToken},
		{name: "--token wins over the environment", flag: true, env: envToken, want: flagToken},
		{name: "--token and --token-file conflict", file: privateFile, flag: true, wantErr: "both --token and --token-file"},
		{name: "conflict even with the environment set", file: privateFile, flag: true, env: envToken, wantErr: "both --token and --token-file"},
		{name: "no token", wantErr: "no join token"},
		{name: "blank environment is no token", env: " \n", wantErr: "no join token"},
		{name: "empty token file is no token", file: emptyFile, env: envToken, wantErr: "no join token"},
		{name: "unreadable token file", file: missingFile, wantErr: "read the join token"},
		{name: "unreadable token file does not fall back to the environment", file: missingFile, env: envToken, wantErr: "read the join token"},
		{name: "joined node resumes without a token", joined: true, want: ""},
		{name: "joined node resumes without its token file", file: missingFile, joined: true, want: "", wantWarn: "resuming the joined node without it"},
		{name: "joined node keeps a given token", env: envToken, joined: true, want: envToken},
		{name: "joined node still refuses a conflict", file: privateFile, flag: true, joined: true, wantErr: "both --token and --token-file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			dataDir := filepath.Join(dir, "data")
			if tc.joined {
				writeJoinedNode(t, dataDir)
			}
			t.Setenv("WARREN_JOIN_TOKEN", tc.env)
			args := []string{"--data-dir", dataDir}
			path := filepath.Join(dir, "token")
			switch tc.file {
			case privateFile, sharedFile, emptyFile:
				content, mode := "\n "+fileToken+" \n", os.FileMode(0o600)
				if tc.file == sharedFile {
					mode = 0o644
				}
				if tc.file == emptyFile {
					content = ""
				}
				if err := os.WriteFile(path, []byte(content), mode); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, mode); err != nil { // past the umask
					t.Fatal(err)
				}
			}
			if tc.file != noFile {
				args = append(args, "--token-file", path)
			}
			if tc.flag {
				args = append(args, "--token", flagToken)
			}
			got, stderr, err := runJoinTokenOf(t, args)
			switch {
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error = %v; want one containing %q", err, tc.wantErr)
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			}
			if got != tc.want {
				t.Fatalf("token = %q; want %q", got, tc.want)
			}
			if tc.wantWarn == "" && stderr != "" {
				t.Fatalf("unexpected output on stderr: %s", stderr)
			}
			if !strings.Contains(stderr, tc.wantWarn) {
				t.Fatalf("stderr = %q; want it to contain %q", stderr, tc.wantWarn)
			}
			if strings.Contains(stderr, "0123456789abcdef") {
				t.Fatalf("a warning printed the token: %s", stderr)
			}
		})
	}
}
