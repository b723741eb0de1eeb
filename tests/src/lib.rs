//! Cross-crate tests of the sapo workspace. The backend cross-validation and
//! the command-line end-to-end tests land here with the issues that build
//! the backends and the `sapo` command; the sapo-core contract tests live in
//! `sapo-core/tests/`.
