//! Unit tests of the auth module (run in both the pooler crate and a scratch crate, so only `super::` paths).

mod authfile_tests;
mod md5_tests;
mod scram_malformed;
mod scram_tests;
