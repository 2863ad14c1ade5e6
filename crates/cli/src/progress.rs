//! The progress bar (indicatif), on a terminal only.

use agentpkg_client::UploadProgress;
use indicatif::{ProgressBar, ProgressStyle};

pub struct Bar(ProgressBar);

impl Bar {
    pub fn new() -> Self {
        Self(ProgressBar::hidden())
    }

    fn show(&self, total: u64, already: u64, what: &str) {
        self.0
            .set_draw_target(indicatif::ProgressDrawTarget::stderr());
        self.0.set_length(total);
        self.0.set_position(already);
        self.0.reset_eta();
        let style = ProgressStyle::with_template(
            "{msg:9} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        self.0.set_style(style);
        self.0.set_message(what.to_owned());
    }
}

impl UploadProgress for Bar {
    fn hashing(&self, total: u64) {
        self.show(total, 0, "hashing");
    }

    fn sending(&self, total: u64, already: u64) {
        self.show(total, already, "transfer");
    }

    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
