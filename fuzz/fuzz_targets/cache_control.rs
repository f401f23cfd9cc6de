#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tollgate_cache::fuzzing::cache_control(data));
