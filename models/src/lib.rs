//! GPT-2 on the engine (issue 4).
