#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_pool::fuzzing::run(data));
