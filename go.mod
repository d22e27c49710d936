module github.com/tokenrefresher/tokenrefresher

go 1.26.8

require (
	github.com/gofrs/flock v0.13.1
	golang.org/x/oauth2 v0.37.0
	golang.org/x/sync v0.24.0
)

require golang.org/x/sys v0.47.0 // indirect
