//! A job shard's operations written against a small storage trait.
