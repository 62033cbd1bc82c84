pub mod manifest_gen;
