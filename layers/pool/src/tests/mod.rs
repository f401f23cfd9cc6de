mod loom_tokens;
