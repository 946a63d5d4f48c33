//! Image references (`LSB_DOCKER_IMAGE`, `--image`, `-a docker(...)`): an accepted reference
//! prints back to itself in canonical form, which parses to the same reference and carries
//! nothing dockerd's query string or a registry URL could misread.
#![no_main]
use jobdock::image::ImageRef;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(image) = ImageRef::parse(text) {
        let printed = image.to_string();
        assert!(!printed.starts_with('-'), "{printed:?}");
        assert!(
            printed
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"&?#%\\\"'".contains(&b)),
            "{text:?} -> {printed:?}"
        );
        assert_eq!(
            ImageRef::parse(&printed).as_ref(),
            Ok(&image),
            "{text:?} -> {printed:?}"
        );
    }
});
