//! Fault state: each mock defines which faults it knows (its own `Faults` type, serialised as
//! its control API shows it); the kit holds the current set and rolls the dice.

use std::sync::RwLock;

use crate::sync::{read, write};

/// The faults switched on now. `POST /_sandbox/faults` replaces them all; `DELETE` clears them.
#[derive(Debug, Default)]
pub struct FaultSwitch<F> {
    current: RwLock<F>,
}

impl<F: Clone + Default> FaultSwitch<F> {
    /// A snapshot: a request decides with the faults it started with.
    pub fn get(&self) -> F {
        read(&self.current).clone()
    }

    pub fn set(&self, faults: F) {
        *write(&self.current) = faults;
    }

    /// Switches everything off and returns the (default) state now in force.
    pub fn clear(&self) -> F {
        let off = F::default();
        *write(&self.current) = off.clone();
        off
    }
}

/// True with probability `rate` (0..=1); never for 0 or less.
pub fn roll(rate: f64) -> bool {
    rate > 0.0 && rand::random::<f64>() < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_rate_never_fires_and_a_full_rate_always_does() {
        assert!((0..1000).all(|_| !roll(0.0)));
        assert!((0..1000).all(|_| roll(1.0)));
    }

    #[test]
    fn clear_restores_the_default() {
        let switch = FaultSwitch::<Option<u64>>::default();
        switch.set(Some(5));
        assert_eq!(switch.get(), Some(5));
        assert_eq!(switch.clear(), None);
        assert_eq!(switch.get(), None);
    }
}
