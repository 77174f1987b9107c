//! The simulated scenarios of issue 3.
