package messages

// The generator is pinned: protoc-gen-go through go.mod's tool directive, protoc
// from Debian 12's protobuf-compiler (3.21.12). `go tool task gen` runs this.
//go:generate sh -c "protoc -I . -I $(go list -m -f '{{.Dir}}' github.com/asynkron/protoactor-go)/actor --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --go_out=. --go_opt=paths=source_relative types.proto store.proto events.proto worker.proto api.proto audit.proto gateway.proto logs.proto system.proto"
