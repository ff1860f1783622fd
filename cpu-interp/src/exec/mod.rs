//! Instruction execution, one file per family (owned by EXEC).
