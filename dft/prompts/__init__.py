"""The combinatorial prompt table and the neutral evaluation prompts."""
