"""OpenAI's Responses API (POST /v1/responses), as vLLM serves it: input items become a chat conversation,
the answer is read by the chat route's tool and reasoning parsers into output items, and an optional bounded
store keeps responses for retrieval, previous_response_id and background runs."""
