//! openai wire format (being written).
