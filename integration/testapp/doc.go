// Command testapp is the Go program the integration tests and demos run in
// containers. It is deliberately small and uses only the standard library.
//
//	testapp serve --listen :8080 [--ready-file PATH]
//	testapp sleep
//	testapp alloc --mib N
//
// Every subcommand also takes the signal and logging flags:
//
//	--term-delay D        on SIGTERM log "got SIGTERM", wait D, exit 0
//	--ignore-term         log SIGTERM and keep running (only SIGKILL stops it)
//	--log-every D         print "tick N" to stdout every D; every 10th tick
//	                      also to stderr
//	--on-term-append FILE append "<name> term <unix-nanos>" to FILE on SIGTERM
//	--name NAME           the name for --on-term-append (default $HOSTNAME)
//
// serve answers, logging one line per request to stdout:
//
//	GET  /health                 200 "ok"
//	GET  /ready                  200 "ready" or 503 "not ready"
//	POST /ready?v=true|false     set readiness (with --ready-file, ready also
//	                             needs the file to exist)
//	GET  /dial?addr=HOST:PORT    200 "ok" if a TCP connect succeeds, else 502
//	GET  /fetch?url=URL          the status and body of GET URL, 502 on error
//	GET  /read?path=P            the file's content (404 if missing)
//	POST /write?path=P           write the request body to P
//	GET  /hostname               the hostname
//	GET  /env?k=NAME             the variable's value (404 if unset)
//	POST /exit?code=N            respond, then exit with status N
//
// It does not own any test logic: tests drive it over HTTP and read its logs.
package main
