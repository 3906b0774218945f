//! anthropic wire format (being written).
