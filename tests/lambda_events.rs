//! Placeholder: Lambda event fixtures under the emulator (issue 5) land here.
