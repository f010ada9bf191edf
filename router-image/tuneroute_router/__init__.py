"""tuneroute router: one OpenAI-compatible endpoint that routes by request complexity."""
