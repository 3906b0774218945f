//! ASC gateway library (module map written as modules land).
pub mod mock;
