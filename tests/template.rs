//! Placeholder: the SAM template checks (issue 5) land here.
