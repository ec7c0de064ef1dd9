package main

// The options every list shares, as Docker's: -q (ids only), --filter
// KEY=VALUE (repeatable; the same key twice matches either value,
// different keys must all match), --format with a Go template per row
// ("table " first adds a header) and -o json. Everything is checked before
// a connection is made; filters apply on the client, to the full list the
// manager returns (the api has no filter arguments).

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/urfave/cli/v2"
)

// listFlags are -o, -q, --filter and --format for a list whose rows are
// of type row (its exported fields are what --format sees) and whose
// filters are keys.
func listFlags(row any, keys ...string) []cli.Flag {
	return []cli.Flag{
		outputFlag(),
		&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only the " + quietWhat(row) + ", one a line"},
		&cli.StringSliceFlag{Name: "filter", Aliases: []string{"f"}, Usage: "only rows matching KEY=VALUE, KEY one of " + strings.Join(keys, ", ") +
			" (repeatable: the same key twice matches either value, different keys must all match)"},
		&cli.StringFlag{Name: "format", Usage: "print each row with a Go template, e.g. '" + formatExample(row) + "'; start it with 'table ' for aligned columns under a header; fields: " +
			strings.Join(fieldNames(row), ", ")},
	}
}

// quietWhat is what -q prints for a list: what its commands take.
func quietWhat(row any) string {
	switch row.(type) {
	case serviceRow:
		return "names" // every service command takes a name
	case imageRow:
		return "references"
	}
	return "ids"
}

// listOpts are a list's parsed -q, --filter and --format.
type listOpts struct {
	quiet   bool
	json    bool
	filters map[string][]string
	tmpl    *template.Template
	table   bool   // --format began with "table "
	header  string // the header line of a table format
}

// parseListOpts checks the list flags against row's fields and the
// filter keys, before any connection.
func parseListOpts(c *cli.Context, row any, keys ...string) (*listOpts, error) {
	if err := checkOutput(c); err != nil {
		return nil, err
	}
	o := &listOpts{quiet: c.Bool("quiet"), json: c.String("output") == "json", filters: map[string][]string{}}
	given := 0
	for _, b := range []bool{o.quiet, o.json, c.IsSet("format")} {
		if b {
			given++
		}
	}
	if given > 1 {
		return nil, fmt.Errorf("-q, --format and -o json each choose the output: give one")
	}
	for _, f := range c.StringSlice("filter") {
		k, v, ok := strings.Cut(f, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || v == "" {
			return nil, fmt.Errorf("invalid --filter %q: expected KEY=VALUE, KEY one of %s", f, strings.Join(keys, ", "))
		}
		if !slices.Contains(keys, k) {
			return nil, fmt.Errorf("invalid --filter %q: unknown key %q; this list filters on %s", f, k, strings.Join(keys, ", "))
		}
		o.filters[k] = append(o.filters[k], v)
	}
	if c.IsSet("format") {
		if err := o.parseFormat(c.String("format"), row); err != nil {
			return nil, err
		}
	}
	return o, nil
}

var templateFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"join":  func(l []string, sep string) string { return strings.Join(l, sep) },
	"upper": strings.ToUpper,
	"lower": strings.ToLower,
	"truncate": func(s string, n int) string {
		if len(s) > n {
			return s[:n]
		}
		return s
	},
}

var fieldRef = regexp.MustCompile(`{{\s*\.(\w+)\s*}}`)

func (o *listOpts) parseFormat(text string, row any) error {
	if t, ok := strings.CutPrefix(text, "table"); ok && (t == "" || t[0] == ' ' || t[0] == '\t') {
		o.table, text = true, strings.TrimLeft(t, " \t")
		if text == "" {
			return fmt.Errorf("invalid --format %q: give the columns after table, e.g. 'table {{.Name}}\\t{{.Image}}'", "table")
		}
	}
	// As in a shell's single quotes: \t and \n typed as two characters.
	text = strings.NewReplacer(`\t`, "\t", `\n`, "\n").Replace(text)
	t, err := template.New("format").Funcs(templateFuncs).Parse(text)
	if err == nil {
		// A field the row lacks fails only when executed: try a zero row.
		err = t.Execute(io.Discard, reflect.Zero(reflect.TypeOf(row)).Interface())
	}
	if err != nil {
		return fmt.Errorf("invalid --format: %v; the fields are %s", err, strings.Join(fieldNames(row), ", "))
	}
	o.tmpl = t
	if o.table {
		o.header = fieldRef.ReplaceAllStringFunc(text, func(m string) string {
			return headerName(fieldRef.FindStringSubmatch(m)[1])
		})
	}
	return nil
}

// headerName turns CurrentState into CURRENT STATE.
func headerName(field string) string {
	var b strings.Builder
	for i, r := range field {
		if i > 0 && r >= 'A' && r <= 'Z' && !(field[i-1] >= 'A' && field[i-1] <= 'Z') {
			b.WriteByte(' ')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

// formatExample is a --format example with the row's own first two fields.
func formatExample(row any) string {
	var parts []string
	for _, f := range fieldNames(row) {
		if len(parts) < 2 {
			parts = append(parts, "{{"+f+"}}")
		}
	}
	return strings.Join(parts, " ")
}

func fieldNames(row any) []string {
	t := reflect.TypeOf(row)
	var out []string
	for i := range t.NumField() {
		if t.Field(i).IsExported() {
			out = append(out, "."+t.Field(i).Name)
		}
	}
	return out
}

// match reports whether the filter key accepts a row: true when the key
// was not given, else when test accepts one of its values.
func (o *listOpts) match(key string, test func(v string) bool) bool {
	vs, ok := o.filters[key]
	if !ok {
		return true
	}
	return slices.ContainsFunc(vs, test)
}

// prefix is a test for id and name filters: the value starts the field.
func prefix(field string) func(string) bool {
	return func(v string) bool { return strings.HasPrefix(field, v) }
}

// equalFold is a test for state-like filters.
func equalFold(field string) func(string) bool {
	return func(v string) bool { return strings.EqualFold(field, v) }
}

// labelMatch is the label filter: KEY matches a label set to anything,
// KEY=VALUE that value only.
func labelMatch(labels map[string]string) func(string) bool {
	return func(v string) bool {
		k, want, hasValue := strings.Cut(v, "=")
		got, ok := labels[k]
		return ok && (!hasValue || got == want)
	}
}

// print writes the rows as -q or --format ask, and reports whether it
// did; otherwise the caller prints its table or JSON.
func printRows[R any](w io.Writer, o *listOpts, rows []R, id func(R) string) (bool, error) {
	switch {
	case o.quiet:
		for _, r := range rows {
			if _, err := fmt.Fprintln(w, id(r)); err != nil {
				return true, err
			}
		}
		return true, nil
	case o.tmpl != nil:
		out := w
		tw := table(w)
		if o.table {
			out = tw
			fmt.Fprintln(tw, o.header)
		}
		for _, r := range rows {
			if err := o.tmpl.Execute(out, r); err != nil {
				return true, fmt.Errorf("--format: %w", err)
			}
			fmt.Fprintln(out)
		}
		return true, tw.Flush()
	}
	return false, nil
}

// printLine prints one result of a command that acts on several things:
// v as a JSON line with -o json, else text.
func printLine(c *cli.Context, v any, text string) error {
	if c.String("output") == "json" {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		text = string(b)
	}
	_, err := fmt.Println(text)
	return err
}
