//! Building DICOM data sets to write: [`DataSet`] puts attributes with the VR the standard
//! dictionary gives each tag (so a value cannot go out under the wrong VR; only
//! [`DataSet::element`] takes an element as it is, for pixel data), and code sequence items. The node writes annotation instances with it; slidemesh-tools
//! writes its synthetic slides with it.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::value::{DataSetSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{StandardDataDictionary, tags};
use dicom_object::InMemDicomObject;
use dicom_object::mem::InMemElement;

/// Implementation Class UID of files slidemesh writes (PS3.7 D.3.3.2), a fixed
/// UUID-derived UID so files do not claim to come from dicom-rs itself.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.203915613480532711340476385312964467227";

/// A coded concept (Code Sequence Macro, PS3.3 Table 8.8-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub value: &'static str,
    /// The coding scheme designator: `SCT`, `DCM`, `UCUM`, ...
    pub scheme: &'static str,
    pub meaning: &'static str,
}

impl Code {
    pub const fn new(value: &'static str, scheme: &'static str, meaning: &'static str) -> Code {
        Code {
            value,
            scheme,
            meaning,
        }
    }

    /// The code as one item of a code sequence.
    pub fn item(self) -> InMemDicomObject {
        DataSet::new()
            .str(tags::CODE_VALUE, self.value)
            .str(tags::CODING_SCHEME_DESIGNATOR, self.scheme)
            .str(tags::CODE_MEANING, self.meaning)
            .build()
    }
}

/// A decimal string (DS) of at most 16 characters, without exponent.
pub fn ds(v: f64) -> String {
    for decimals in (0..=10).rev() {
        let s = format!("{v:.decimals$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        };
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{v:.0}")
}

/// Builds a data set, taking each attribute's VR from the standard dictionary.
pub struct DataSet(InMemDicomObject);

impl Default for DataSet {
    fn default() -> Self {
        Self::new()
    }
}

impl DataSet {
    pub fn new() -> Self {
        DataSet(InMemDicomObject::new_empty())
    }

    fn vr(tag: Tag) -> VR {
        StandardDataDictionary
            .by_tag(tag)
            .map(|e| e.vr().relaxed())
            .unwrap_or(VR::UN)
    }

    pub fn put(&mut self, tag: Tag, value: PrimitiveValue) -> &mut Self {
        self.0.put(DataElement::new(tag, Self::vr(tag), value));
        self
    }

    pub fn str(&mut self, tag: Tag, v: &str) -> &mut Self {
        self.put(tag, PrimitiveValue::from(v))
    }

    pub fn strs(&mut self, tag: Tag, v: &[&str]) -> &mut Self {
        self.put(
            tag,
            PrimitiveValue::Strs(v.iter().map(|s| s.to_string()).collect()),
        )
    }

    /// An empty value, for type 2 attributes that are known but have no value.
    pub fn empty(&mut self, tag: Tag) -> &mut Self {
        self.put(tag, PrimitiveValue::Empty)
    }

    pub fn ds(&mut self, tag: Tag, v: &[f64]) -> &mut Self {
        self.put(
            tag,
            PrimitiveValue::Strs(v.iter().map(|&x| ds(x)).collect()),
        )
    }

    pub fn int_str(&mut self, tag: Tag, v: u64) -> &mut Self {
        self.put(tag, PrimitiveValue::from(v.to_string()))
    }

    pub fn u16(&mut self, tag: Tag, v: u16) -> &mut Self {
        self.put(tag, PrimitiveValue::from(v))
    }

    pub fn u32(&mut self, tag: Tag, v: u32) -> &mut Self {
        self.put(tag, PrimitiveValue::from(v))
    }

    pub fn f32(&mut self, tag: Tag, v: f32) -> &mut Self {
        self.put(tag, PrimitiveValue::from(v))
    }

    pub fn tags(&mut self, tag: Tag, v: &[Tag]) -> &mut Self {
        self.put(tag, PrimitiveValue::Tags(v.iter().copied().collect()))
    }

    /// An element as it is (pixel data, or a VR other than the dictionary's).
    pub fn element(&mut self, element: InMemElement) -> &mut Self {
        self.0.put(element);
        self
    }

    pub fn seq(&mut self, tag: Tag, items: Vec<InMemDicomObject>) -> &mut Self {
        self.0.put(InMemElement::new(
            tag,
            VR::SQ,
            Value::from(DataSetSequence::from(items)),
        ));
        self
    }

    /// The data set built so far; the builder is left empty.
    pub fn build(&mut self) -> InMemDicomObject {
        std::mem::replace(&mut self.0, InMemDicomObject::new_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_fit_sixteen_chars() {
        assert_eq!(ds(0.00025), "0.00025");
        assert_eq!(ds(-1.0), "-1");
        assert_eq!(ds(0.0), "0");
        assert_eq!(ds(12.5 + 0.000125 * 30001.0), "16.250125");
        assert!(ds(0.1 + 0.2).len() <= 16);
        assert!(ds(123456.123456789).len() <= 16);
    }
}
