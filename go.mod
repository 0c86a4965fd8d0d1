module github.com/hypercore-dev/hypercore

go 1.26.0

require (
	github.com/google/go-containerregistry v0.22.1
	github.com/pelletier/go-toml/v2 v2.4.3
)

require github.com/opencontainers/go-digest v1.0.0 // indirect
