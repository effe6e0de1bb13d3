"""CSV ingestion: streamed uploads summarized with bounded memory."""
