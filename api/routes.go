package api

// The admin API: HTTP/JSON over the unix socket (default
// /run/berth/agent.sock, mode 0660). Every non-2xx response has an
// ErrorBody. Streams (follow=1) are newline-delimited JSON, one value a line.
//
//	GET    /v1/version                      VersionInfo
//	POST   /v1/apply                        ApplyRequest → []ApplyResult (all or nothing)
//	GET    /v1/groups                       []GroupStatus
//	GET    /v1/groups/{name}                GroupStatus with Spec and Events
//	DELETE /v1/groups/{name}[?wait=1]       stop and remove; wait=1 returns when gone
//	POST   /v1/groups/{name}/stop[?wait=1]  stop, keep the definition
//	POST   /v1/groups/{name}/start          start a stopped group
//	GET    /v1/groups/{name}/logs           LogEntry stream; query: container, follow=1,
//	                                        tail=N, since=RFC3339 time or duration ("10m")
//	GET    /v1/events                       []Event, or a stream with follow=1; query: group
//	GET    /v1/top                          []ContainerUsage of every running container
//	GET    /v1/node                         NodeStatus
//	POST   /v1/node/drain                   stop every group, lowest priority first; NodeStatus
//	POST   /v1/node/undrain                 let groups run again; NodeStatus
//	GET    /v1/images                       []ImageInfo
//	POST   /v1/images/import?name=REF       body: OCI or docker archive → []ImageInfo
//	POST   /v1/images/pull?ref=REF          ImageInfo (credentials from the agent's
//	                                        docker-style registry auth file)
const (
	PathVersion = "/v1/version"
	PathApply   = "/v1/apply"
	PathGroups  = "/v1/groups"
	PathEvents  = "/v1/events"
	PathImages  = "/v1/images"
	PathNode    = "/v1/node"
	PathTop     = "/v1/top"
)

// ContentTypeNDJSON is the content type of streams.
const ContentTypeNDJSON = "application/x-ndjson"
