//! Mock providers (being written).
