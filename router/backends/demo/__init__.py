"""Demo backends: simulated models behind real servers, for demos and tests.

Everything in this package is a simulation, named "demo" wherever it shows: a deterministic
answer generator (``answers``), a real Triton server serving it with the vLLM backend's
interface through PyTriton (``triton_model``), an OpenAI-compatible HTTP server serving it
(``openai_server``), and a launcher running both as child processes (``launcher``).
"""
