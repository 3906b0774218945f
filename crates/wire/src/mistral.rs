//! mistral wire format (being written).
