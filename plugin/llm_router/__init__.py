"""llm-router: route each LLM API request to the cheapest model that serves it well."""

__version__ = "0.1.0"
