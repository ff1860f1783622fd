//! The outcome of an instruction that did not complete normally.

/// Exception vectors (Intel SDM Vol. 3A §6.3.1, Table 6-1).
pub mod vector {
    pub const DE: u8 = 0;
    pub const DB: u8 = 1;
    pub const NMI: u8 = 2;
    pub const BP: u8 = 3;
    pub const OF: u8 = 4;
    pub const BR: u8 = 5;
    pub const UD: u8 = 6;
    pub const NM: u8 = 7;
    pub const DF: u8 = 8;
    pub const TS: u8 = 10;
    pub const NP: u8 = 11;
    pub const SS: u8 = 12;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
    pub const MF: u8 = 16;
    pub const AC: u8 = 17;
}

/// An exception raised by an instruction (a fault: RIP still points at the instruction, the
/// state is as before it, except for documented partial effects like REP progress).
///
/// Eight bytes, so that `Result<(), Fault>` — what every instruction handler returns — comes
/// back in a register instead of through memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub vector: u8,
    has_code: bool,
    /// The error code if `has_code`, else 0.
    code: u32,
}

impl Fault {
    /// A fault without an error code.
    pub const fn new(vector: u8) -> Self {
        Fault {
            vector,
            has_code: false,
            code: 0,
        }
    }
    /// A fault with an error code.
    pub const fn with_code(vector: u8, code: u32) -> Self {
        Fault {
            vector,
            has_code: true,
            code,
        }
    }
    /// The error code pushed with the exception, if it has one.
    #[inline]
    pub const fn error_code(&self) -> Option<u32> {
        if self.has_code {
            Some(self.code)
        } else {
            None
        }
    }
    /// #UD.
    pub const fn ud() -> Self {
        Self::new(vector::UD)
    }
    /// #GP(code).
    pub const fn gp(code: u32) -> Self {
        Self::with_code(vector::GP, code)
    }
    /// #SS(code).
    pub const fn ss(code: u32) -> Self {
        Self::with_code(vector::SS, code)
    }
    /// #DE.
    pub const fn de() -> Self {
        Self::new(vector::DE)
    }
}

#[cfg(test)]
mod tests {
    use super::Fault;

    #[test]
    fn handler_result_fits_a_register() {
        assert_eq!(std::mem::size_of::<Result<(), Fault>>(), 8);
        assert_eq!(Fault::gp(5).error_code(), Some(5));
        assert_eq!(Fault::ud().error_code(), None);
    }
}
