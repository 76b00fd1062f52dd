"""Tests of the LangChain, LlamaIndex and Haystack components (routerank.integrations)."""

import os

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # offline tests: Haystack sends no usage reports
