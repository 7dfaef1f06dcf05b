//! A small reader for the kernel's BTF (`/sys/kernel/btf/vmlinux`): just
//! enough to find a function's prototype, its parameter names and the sizes
//! of their types, and the values of enumerators such as `FOLL_*`.
//!
//! Written by hand because aya keeps its BTF type accessors crate-private
//! and the one maintained standalone reader (btf-rs) is LGPL, which does not
//! fit this project's MIT/Apache licensing of a statically linked binary.
//! The format is the kernel's `include/uapi/linux/btf.h`.

use std::{collections::HashMap, hash::BuildHasher as _};

/// Errors reading BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// Path of the BTF file.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The data is not BTF this reader understands.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
}

const MAGIC: u16 = 0xeb9f;

// BTF kinds (btf.h BTF_KIND_*).
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Copy, Debug)]
struct RawType {
    name_off: u32,
    kind: u32,
    vlen: u32,
    size_or_type: u32,
    /// Byte offset of the kind-specific data following the header.
    data: usize,
    /// Bit 31 of `info` (for structs: members carry bitfield sizes).
    kind_flag: bool,
}

/// One parameter of a function prototype.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    /// Parameter name (may be empty).
    pub name: String,
    /// Size in bytes of its type after typedefs and qualifiers; `None` for
    /// aggregates or types this reader does not size.
    pub size: Option<u32>,
}

/// A function's prototype as BTF describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuncProto {
    /// Parameters in order.
    pub params: Vec<Param>,
    /// Size of the return type in bytes; `Some(0)` for void.
    pub ret_size: Option<u32>,
}

/// Parsed BTF: types plus an index of functions by name.
pub struct Btf {
    data: Vec<u8>,
    strings_start: usize,
    strings_len: usize,
    types: Vec<RawType>,
    /// Function type ids by a hash of their name: the first of each name
    /// (kernel BTF describes ~60 000 functions, and an owned copy of
    /// every name cost more than the rest of the parse together).
    funcs: HashMap<u64, u32, FixedState>,
}

/// The function index's hasher: foldhash (hashbrown's own), fixed-seeded,
/// as the keys are not chosen by anyone hostile.
type FixedState = foldhash::fast::FixedState;

/// The index key of function name `name`.
fn name_key(name: &[u8]) -> u64 {
    FixedState::default().hash_one(name)
}

fn u32_at(data: &[u8], off: usize) -> Result<u32, BtfError> {
    data.get(off..off + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file("/sys/kernel/btf/vmlinux")
    }

    /// Reads BTF from a file.
    pub fn from_file(path: &str) -> Result<Self, BtfError> {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let parts = cpus.min(super::file_parts::MOST_READ_PARTS);
        let data =
            super::file_parts::read_in_parts(path, parts).map_err(|source| BtfError::Io {
                path: path.to_string(),
                source,
            })?;
        Self::parse(data)
    }

    /// Parses raw little-endian BTF bytes.
    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        if data.len() < 24 {
            return Err(BtfError::Malformed("shorter than a header"));
        }
        if u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let type_off = u32_at(&data, 8)? as usize;
        let type_len = u32_at(&data, 12)? as usize;
        let str_off = u32_at(&data, 16)? as usize;
        let str_len = u32_at(&data, 20)? as usize;
        let types_start = hdr_len + type_off;
        let strings_start = hdr_len + str_off;
        if types_start + type_len > data.len() || strings_start + str_len > data.len() {
            return Err(BtfError::Malformed("sections beyond the end of the data"));
        }
        let mut btf = Btf {
            data,
            strings_start,
            strings_len: str_len,
            // Type id 0 is void.
            types: Vec::with_capacity(type_len / 16),
            funcs: HashMap::default(),
        };
        btf.types.push(RawType {
            name_off: 0,
            kind: 0,
            vlen: 0,
            size_or_type: 0,
            data: 0,
            kind_flag: false,
        });
        let end = types_start + type_len;
        let mut off = types_start;
        while off < end {
            let name_off = u32_at(&btf.data, off)?;
            let info = u32_at(&btf.data, off + 4)?;
            let size_or_type = u32_at(&btf.data, off + 8)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                0..=19 => 0,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            let id = btf.types.len() as u32;
            btf.types.push(RawType {
                name_off,
                kind,
                vlen,
                size_or_type,
                data: off + 12,
                kind_flag: info >> 31 != 0,
            });
            if kind == KIND_FUNC {
                let key = name_key(btf.string_bytes(name_off)?);
                btf.funcs.entry(key).or_insert(id);
            }
            off += 12 + extra;
        }
        Ok(btf)
    }

    fn string(&self, off: u32) -> Result<&str, BtfError> {
        std::str::from_utf8(self.string_bytes(off)?)
            .map_err(|_| BtfError::Malformed("non-UTF-8 string"))
    }

    /// The bytes of the string at `off`, without its NUL.
    fn string_bytes(&self, off: u32) -> Result<&[u8], BtfError> {
        let off = off as usize;
        if off >= self.strings_len {
            return Err(BtfError::Malformed("string offset out of range"));
        }
        let start = self.strings_start + off;
        let bytes = &self.data[start..self.strings_start + self.strings_len];
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        Ok(&bytes[..len])
    }

    /// Size of type `id` after typedefs and qualifiers.
    fn type_size(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                0 => return Some(0),
                KIND_INT | KIND_ENUM | KIND_ENUM64 | KIND_STRUCT | KIND_UNION => {
                    return Some(t.size_or_type);
                }
                KIND_PTR => return Some(8),
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type;
                }
                _ => return None,
            }
        }
        None
    }

    /// Whether a function of this name is described.
    pub fn has_func(&self, name: &str) -> bool {
        self.func_id(name).is_some()
    }

    /// The BTF type id of function `name`, if BTF describes it: the
    /// index's entry for its hash when that entry is this name, else (two
    /// names of one hash, which the index keeps the first of) the first
    /// function of this name in a scan.
    pub fn func_id(&self, name: &str) -> Option<u32> {
        let named = |id: u32| {
            self.types.get(id as usize).is_some_and(|t| {
                t.kind == KIND_FUNC && self.string(t.name_off).is_ok_and(|n| n == name)
            })
        };
        let id = *self.funcs.get(&name_key(name.as_bytes()))?;
        if named(id) {
            return Some(id);
        }
        (1..self.types.len() as u32).find(|&id| named(id))
    }

    /// The prototype of function `name`, if BTF describes it.
    pub fn func_proto(&self, name: &str) -> Option<FuncProto> {
        let func = self.types.get(self.func_id(name)? as usize)?;
        let proto = self.types.get(func.size_or_type as usize)?;
        if proto.kind != KIND_FUNC_PROTO {
            return None;
        }
        let params = (0..proto.vlen as usize)
            .map(|i| {
                let off = proto.data + 8 * i;
                let name_off = u32_at(&self.data, off).ok()?;
                let ty = u32_at(&self.data, off + 4).ok()?;
                Some(Param {
                    name: self.string(name_off).ok()?.to_string(),
                    size: self.type_size(ty),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(FuncProto {
            params,
            ret_size: self.type_size(proto.size_or_type),
        })
    }

    /// Every enumerator whose name starts with `prefix`, with its value, in
    /// type order (e.g. the `FOLL_*` flags, an enum since 6.3).
    pub fn enumerators(&self, prefix: &str) -> Vec<(String, u64)> {
        let mut found = Vec::new();
        for t in &self.types {
            let (stride, wide) = match t.kind {
                KIND_ENUM => (8, false),
                KIND_ENUM64 => (12, true),
                _ => continue,
            };
            for i in 0..t.vlen as usize {
                let off = t.data + stride * i;
                let (Ok(name_off), Ok(lo)) = (u32_at(&self.data, off), u32_at(&self.data, off + 4))
                else {
                    continue;
                };
                let Ok(name) = self.string(name_off) else {
                    continue;
                };
                if !name.starts_with(prefix) {
                    continue;
                }
                let value = if wide {
                    let hi = u32_at(&self.data, off + 8).unwrap_or(0);
                    (u64::from(hi) << 32) | u64::from(lo)
                } else {
                    u64::from(lo)
                };
                found.push((name.to_string(), value));
            }
        }
        found
    }

    /// Byte offset of member `member` in struct `name` (the first struct of
    /// that name), e.g. `task_struct.stack`, searching the anonymous structs
    /// and unions it embeds too (`mm_struct.locked_vm` sits in one); a
    /// bitfield off a byte boundary has none.
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        let t = self
            .types
            .iter()
            .find(|t| t.kind == KIND_STRUCT && self.string(t.name_off).ok() == Some(name))?;
        self.member_offset_in(t, member, 0)
    }

    /// [`Self::member_offset`] inside `t`, `depth` anonymous levels down.
    fn member_offset_in(&self, t: &RawType, member: &str, depth: u32) -> Option<u32> {
        // The kernel nests anonymous aggregates two or three deep; a bound
        // keeps a malformed (cyclic) BTF from recursing forever.
        if depth > 8 {
            return None;
        }
        (0..t.vlen as usize).find_map(|i| {
            let off = t.data + 12 * i;
            let name_off = u32_at(&self.data, off).ok()?;
            let raw = u32_at(&self.data, off + 8).ok()?;
            // With kind_flag set the low 24 bits are the bit offset.
            let bits = if t.kind_flag { raw & 0x00ff_ffff } else { raw };
            let name = self.string(name_off).ok()?;
            if name.is_empty() {
                let inner = self.types.get(u32_at(&self.data, off + 4).ok()? as usize)?;
                if inner.kind != KIND_STRUCT && inner.kind != KIND_UNION {
                    return None;
                }
                let within = self.member_offset_in(inner, member, depth + 1)?;
                return bits.is_multiple_of(8).then_some(bits / 8 + within);
            }
            if name != member {
                return None;
            }
            bits.is_multiple_of(8).then_some(bits / 8)
        })
    }

    /// Number of types (for diagnostics).
    pub fn type_count(&self) -> usize {
        self.types.len()
    }

    /// Name of type `id`, if it has one.
    pub fn type_name(&self, id: u32) -> Option<&str> {
        self.string(self.types.get(id as usize)?.name_off).ok()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds BTF bytes from (name, info, size_or_type, extra words) types.
    pub(crate) fn build(types: &[(&str, u32, u32, Vec<u32>)], extra_strings: &[&str]) -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut offsets = HashMap::new();
        let mut intern = |s: &str, strings: &mut Vec<u8>| -> u32 {
            if s.is_empty() {
                return 0;
            }
            *offsets.entry(s.to_string()).or_insert_with(|| {
                let off = strings.len() as u32;
                strings.extend_from_slice(s.as_bytes());
                strings.push(0);
                off
            })
        };
        for s in extra_strings {
            intern(s, &mut strings);
        }
        let mut type_bytes = Vec::new();
        for (name, info, sot, extra) in types {
            let off = intern(name, &mut strings);
            for word in [off, *info, *sot].iter().chain(extra.iter()) {
                type_bytes.extend_from_slice(&word.to_le_bytes());
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.push(1);
        out.push(0);
        for word in [
            24u32,
            0,
            type_bytes.len() as u32,
            type_bytes.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&word.to_le_bytes());
        }
        out.extend_from_slice(&type_bytes);
        out.extend_from_slice(&strings);
        out
    }

    fn info(kind: u32, vlen: u32) -> u32 {
        (kind << 24) | vlen
    }

    #[test]
    fn reads_a_prototype() {
        // Strings are interned in this order so param name offsets are known.
        let strs = ["start", "nr_pages"];
        // 1: int (4 bytes), 2: long (8), 3: typedef s32 -> 1, 4: const -> 2,
        // 5: proto (start: long, nr_pages: s32) -> int, 6: func "pin_fast" -> 5
        let types = vec![
            ("int", info(KIND_INT, 0), 4, vec![32]),
            ("long", info(KIND_INT, 0), 8, vec![64]),
            ("s32", info(KIND_TYPEDEF, 0), 1, vec![]),
            ("", info(KIND_CONST, 0), 2, vec![]),
            ("", info(KIND_FUNC_PROTO, 2), 1, vec![1, 4, 7, 3]),
            ("pin_fast", info(KIND_FUNC, 0), 5, vec![]),
        ];
        let btf = Btf::parse(build(&types, &strs)).unwrap();
        assert_eq!(btf.type_count(), 7);
        assert_eq!(btf.type_name(6), Some("pin_fast"));
        let proto = btf.func_proto("pin_fast").unwrap();
        assert_eq!(
            proto.params,
            vec![
                Param {
                    name: "start".into(),
                    size: Some(8)
                },
                Param {
                    name: "nr_pages".into(),
                    size: Some(4)
                },
            ]
        );
        assert_eq!(proto.ret_size, Some(4));
        assert!(btf.func_proto("missing").is_none());
    }

    /// The function index answers the first function of a name, and a
    /// name whose hash the index gives to another name is still found.
    #[test]
    fn function_index_keeps_the_first_and_survives_collisions() {
        let types = vec![
            ("", info(KIND_FUNC_PROTO, 0), 0, vec![]),
            ("gup", info(KIND_FUNC, 0), 1, vec![]),
            ("gup", info(KIND_FUNC, 0), 1, vec![]),
            ("pin", info(KIND_FUNC, 0), 1, vec![]),
            ("gup_struct", info(KIND_STRUCT, 0), 0, vec![]),
        ];
        let mut btf = Btf::parse(build(&types, &[])).unwrap();
        assert_eq!(btf.func_id("gup"), Some(2));
        assert_eq!(btf.func_id("pin"), Some(4));
        assert_eq!(btf.func_id("gup_struct"), None);
        assert!(!btf.has_func("missing"));
        // As if "pin" hashed like "gup": the index holds "gup" for both.
        btf.funcs.insert(name_key(b"pin"), 2);
        assert_eq!(btf.func_id("pin"), Some(4));
        assert_eq!(btf.func_id("gup"), Some(2));
    }

    #[test]
    fn finds_a_struct_member_offset() {
        let strs = ["state", "stack", "flags"];
        // 1: long; 2: struct task_struct { long state @0; long stack @64 bits };
        // 3: struct with kind_flag, member "flags" at bit 128, bitfield size 3.
        // Name offsets: "state" 1, "stack" 7, "flags" 13.
        let types = vec![
            ("long", info(KIND_INT, 0), 8, vec![64]),
            (
                "task_struct",
                info(KIND_STRUCT, 2),
                16,
                vec![1, 1, 0, 7, 1, 64],
            ),
            (
                "other",
                info(KIND_STRUCT, 1) | 1 << 31,
                24,
                vec![13, 1, 128 | 3 << 24],
            ),
        ];
        let btf = Btf::parse(build(&types, &strs)).unwrap();
        assert_eq!(btf.member_offset("task_struct", "stack"), Some(8));
        assert_eq!(btf.member_offset("task_struct", "state"), Some(0));
        assert_eq!(btf.member_offset("task_struct", "flags"), None);
        assert_eq!(btf.member_offset("other", "flags"), Some(16));
        assert_eq!(btf.member_offset("missing", "stack"), None);
    }

    #[test]
    fn finds_a_member_of_an_embedded_anonymous_struct() {
        // Name offsets: "locked_vm" 1, "pinned_vm" 11, "mmap" 21.
        let strs = ["locked_vm", "pinned_vm", "mmap"];
        // 1: long; 2: struct { long locked_vm @0; long pinned_vm @64 bits };
        // 3: struct mm_struct { long mmap @0; <anonymous 2> @128 bits }.
        let types = vec![
            ("long", info(KIND_INT, 0), 8, vec![64]),
            ("", info(KIND_STRUCT, 2), 16, vec![1, 1, 0, 11, 1, 64]),
            (
                "mm_struct",
                info(KIND_STRUCT, 2),
                32,
                vec![21, 1, 0, 0, 2, 128],
            ),
        ];
        let btf = Btf::parse(build(&types, &strs)).unwrap();
        assert_eq!(btf.member_offset("mm_struct", "mmap"), Some(0));
        assert_eq!(btf.member_offset("mm_struct", "locked_vm"), Some(16));
        assert_eq!(btf.member_offset("mm_struct", "pinned_vm"), Some(24));
        assert_eq!(btf.member_offset("mm_struct", "missing"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(vec![0; 10]).is_err());
        assert!(Btf::parse(vec![0; 64]).is_err());
        let mut bytes = build(&[("int", info(KIND_INT, 0), 4, vec![32])], &[]);
        bytes[12] = 0xff; // type_len far beyond the data
        assert!(Btf::parse(bytes).is_err());
    }

    /// The kernel this runs on describes the GUP family; every machine we
    /// build on (and CI) has /sys/kernel/btf/vmlinux.
    #[test]
    fn reads_the_running_kernel() {
        let btf = Btf::from_sys_fs().expect("kernel BTF at /sys/kernel/btf/vmlinux");
        let proto = btf
            .func_proto("pin_user_pages_fast")
            .expect("pin_user_pages_fast in BTF");
        assert_eq!(proto.params[1].name, "nr_pages");
        assert_eq!(proto.params[1].size, Some(4));
        assert_eq!(proto.ret_size, Some(4));
        assert!(btf.member_offset("task_struct", "stack").is_some());
    }
}
