"""Property-based fuzzing of the whole target: strategies, the README oracle, and the runners."""
