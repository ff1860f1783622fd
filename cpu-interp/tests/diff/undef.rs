//! Which result bits the architecture leaves undefined, per instruction: the one table the
//! differential test masks with. Everything not listed here is compared exactly, so an AMD/Intel
//! difference is only tolerated where the Intel SDM (Vol. 2, "Flags Affected" of each
//! instruction) says "undefined".

pub const CF: u32 = 1 << 0;
pub const PF: u32 = 1 << 2;
pub const AF: u32 = 1 << 4;
pub const ZF: u32 = 1 << 6;
pub const SF: u32 = 1 << 7;
pub const OF: u32 = 1 << 11;
/// The six status flags.
pub const STATUS: u32 = CF | PF | AF | ZF | SF | OF;

/// What is undefined after one case.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Undefined {
    /// EFLAGS bits not compared when the whole sequence ran.
    pub flags: u32,
    /// Per GPR (EAX..EDI order), bits not compared.
    pub regs: [u32; 8],
    /// 64-bit-only cases: bits 63:32 of RAX..RDI and all of R8–R15 not compared.
    pub hi: [u32; 8],
    pub ext: [u64; 8],
    /// For sequences: (offset of an instruction, flags undefined before it runs) — used when
    /// the case stops at that instruction (a fault there, or a trap after the one before).
    pub flags_before: Vec<(u32, u32)>,
}

impl Undefined {
    pub fn flags(flags: u32) -> Self {
        Undefined {
            flags,
            ..Undefined::default()
        }
    }

    /// The undefined flags for a case that stopped with EIP at `offset` into its code.
    pub fn flags_at(&self, offset: u32) -> u32 {
        self.flags_before
            .iter()
            .find(|(o, _)| *o == offset)
            .map_or(self.flags, |(_, f)| *f)
    }
}

/// AND, OR, XOR, TEST: "The OF and CF flags are cleared; the SF, ZF, and PF flags are set
/// according to the result. The state of the AF flag is undefined." (SDM Vol. 2A AND; 2B OR,
/// TEST, XOR.)
pub const LOGIC: u32 = AF;

/// MUL and IMUL (all forms): "The SF, ZF, AF, and PF flags are undefined." (SDM Vol. 2A IMUL,
/// 2B MUL.)
pub const MUL: u32 = SF | ZF | AF | PF;

/// DIV and IDIV: "The CF, OF, SF, ZF, AF, and PF flags are undefined." (SDM Vol. 2A DIV, IDIV.)
pub const DIV: u32 = STATUS;

/// BSF and BSR: "The CF, OF, SF, AF, and PF flags are undefined" (ZF reports a zero source); and
/// "If the content of the source operand is 0, the content of the destination operand is
/// undefined." (SDM Vol. 2A BSF, BSR.) Returns (flags, destination undefined).
pub fn bit_scan(source_is_zero: bool) -> (u32, bool) {
    (CF | OF | SF | AF | PF, source_is_zero)
}

/// BT, BTS, BTR, BTC: "The ZF flag is unaffected. The OF, SF, AF, and PF flags are undefined."
/// (SDM Vol. 2A BT, BTC, BTR, BTS.)
pub const BIT_TEST: u32 = OF | SF | AF | PF;

/// AAA and AAS: "The OF, SF, ZF, and PF flags are undefined." (SDM Vol. 2A AAA, AAS.)
pub const AAA_AAS: u32 = OF | SF | ZF | PF;

/// DAA and DAS: "The OF flag is undefined." (SDM Vol. 2A DAA, DAS.)
pub const DAA_DAS: u32 = OF;

/// AAM and AAD: "The OF, AF, and CF flags are undefined." (SDM Vol. 2A AAM, AAD.)
pub const AAM_AAD: u32 = OF | AF | CF;

/// The shift and rotate group (C0/C1/D0–D3 /0–/7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShiftOp {
    Rol,
    Ror,
    Rcl,
    Rcr,
    Shl,
    Shr,
    /// /6, the undocumented alias of SHL.
    Sal,
    Sar,
}

impl ShiftOp {
    pub const ALL: [ShiftOp; 8] = [
        ShiftOp::Rol,
        ShiftOp::Ror,
        ShiftOp::Rcl,
        ShiftOp::Rcr,
        ShiftOp::Shl,
        ShiftOp::Shr,
        ShiftOp::Sal,
        ShiftOp::Sar,
    ];
}

/// Flags a shift or rotate leaves undefined for a raw count byte (SDM Vol. 2B SAL/SAR/SHL/SHR
/// and RCL/RCR/ROL/ROR). The count is masked to 5 bits; a masked count of 0 affects no flags.
/// - SAL/SAR/SHL/SHR: "The OF flag is affected only on 1-bit shifts. For left shifts, ... For
///   the SAR instruction ... For the SHR instruction ... ; otherwise, it is undefined. ... For
///   a non-zero count, the AF flag is undefined." and CF "is undefined for SHL and SHR
///   instructions where the count is greater than or equal to the size (in bits) of the
///   destination operand."
/// - ROL/ROR/RCL/RCR: "The OF flag is defined only for the 1-bit rotates; it is undefined in all
///   other cases (except RCL and RCR instructions only: a zero-bit rotate does nothing, that is
///   affects no flags)." For ROL/ROR a masked count of 0 also affects no flags (pseudocode).
pub fn shift(op: ShiftOp, bits: u32, count: u8) -> u32 {
    let c = u32::from(count & 0x1F);
    if c == 0 {
        return 0;
    }
    let of = if c == 1 { 0 } else { OF };
    match op {
        ShiftOp::Rol | ShiftOp::Ror | ShiftOp::Rcl | ShiftOp::Rcr => of,
        ShiftOp::Shl | ShiftOp::Sal | ShiftOp::Shr => AF | of | if c >= bits { CF } else { 0 },
        ShiftOp::Sar => AF | of,
    }
}

/// SHLD/SHRD (SDM Vol. 2B): a masked count of 0 affects nothing; "If the count is greater than
/// the operand size, the result is undefined" and "the flags are undefined"; otherwise OF is
/// defined only for 1-bit shifts and "If a shift occurs, the AF flag is undefined."
/// Returns (flags, destination undefined).
pub fn double_shift(bits: u32, count: u8) -> (u32, bool) {
    let c = u32::from(count & 0x1F);
    if c == 0 {
        (0, false)
    } else if c > bits {
        (STATUS, true)
    } else {
        (AF | if c == 1 { 0 } else { OF }, false)
    }
}

/// LAR with a 32-bit destination: "The doubleword is masked by 00FXFF00H before it is loaded
/// into the destination operand" where X (bits 19:16, the limit bits 19:16 of the descriptor)
/// is undefined (SDM Vol. 2A LAR, Figure/Operation). AMD returns the limit bits there.
pub const LAR32_UNDEFINED: u32 = 0x000F_0000;
