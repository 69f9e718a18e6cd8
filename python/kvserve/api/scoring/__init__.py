"""POST /generative_scoring: next-token probabilities of label tokens after query + item."""
