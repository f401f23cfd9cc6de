#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_retry::fuzzing::run(data));
