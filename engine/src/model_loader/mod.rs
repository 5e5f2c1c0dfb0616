//! Getting model files: converting a GGUF to a Hugging Face directory, fetching SmolLM2.
