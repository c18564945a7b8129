//! Annotations: the marks a specialist draws on a referral's slides (a point, a line, a
//! rectangle, a polygon, each with optional free text) and sends with the opinion.
//!
//! Coordinates are in the full-resolution level's total pixel matrix: `x` the column, `y`
//! the row, both from the top-left corner of the top-left pixel (so the centre of the first
//! pixel is (0.5, 0.5)). That is the frame OpenSeadragon's image coordinates use and the one
//! a DICOM Microscopy Bulk Simple Annotations instance with 2D coordinates and pixel origin
//! interpretation VOLUME uses, so no conversion happens on the way. Measurements are derived
//! here from the geometry and the slide's pixel spacing; they are not sent, so the two sides
//! cannot disagree on them.

use serde::{Deserialize, Serialize};

use crate::ids::SlideId;
use crate::referral::ReferralError;

/// Most annotations one opinion carries.
pub const MAX_ANNOTATIONS: usize = 256;
/// Most vertices of one line or polygon.
pub const MAX_VERTICES: usize = 4096;
/// Longest text of one annotation, in bytes.
pub const MAX_ANNOTATION_TEXT: usize = 1024;
/// Largest coordinate: beyond any scanner's pixel matrix (DICOM counts columns in 32 bits),
/// small enough that `f32` keeps better than a tenth of a pixel.
pub const MAX_COORDINATE: f32 = 1_048_576.0;

/// One position in the full-resolution pixel matrix.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub x: f32,
    pub y: f32,
}

/// Floats are equal to themselves once [`Annotation::validate`] has refused NaN.
impl Eq for Point {}

impl Point {
    pub fn new(x: f32, y: f32) -> Point {
        Point { x, y }
    }

    fn distance(self, other: Point, spacing: Spacing) -> f64 {
        let dx = f64::from(other.x - self.x) * spacing.column_mm;
        let dy = f64::from(other.y - self.y) * spacing.row_mm;
        (dx * dx + dy * dy).sqrt()
    }
}

/// The shape of one annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    Point(Point),
    /// An open polyline of two or more vertices.
    Line(Vec<Point>),
    /// An axis-aligned rectangle: its top-left and bottom-right corners.
    Rectangle {
        top_left: Point,
        bottom_right: Point,
    },
    /// A closed polygon of three or more vertices, the first not repeated at the end.
    Polygon(Vec<Point>),
}

impl Shape {
    pub fn kind(&self) -> &'static str {
        match self {
            Shape::Point(_) => "point",
            Shape::Line(_) => "line",
            Shape::Rectangle { .. } => "rectangle",
            Shape::Polygon(_) => "polygon",
        }
    }

    /// The vertices as drawn: one for a point, every vertex of a line or polygon, a
    /// rectangle's four corners clockwise from the top left.
    pub fn vertices(&self) -> Vec<Point> {
        match self {
            Shape::Point(p) => vec![*p],
            Shape::Line(points) | Shape::Polygon(points) => points.clone(),
            Shape::Rectangle {
                top_left: a,
                bottom_right: b,
            } => vec![*a, Point::new(b.x, a.y), *b, Point::new(a.x, b.y)],
        }
    }

    /// What the shape measures on the slide, when the pixel spacing is known: a line's
    /// length, a rectangle's or polygon's area (a point measures nothing).
    pub fn measure(&self, spacing: Spacing) -> Option<Measure> {
        match self {
            Shape::Point(_) => None,
            Shape::Line(points) => Some(Measure::LengthUm(
                points
                    .windows(2)
                    .map(|w| w[0].distance(w[1], spacing))
                    .sum::<f64>()
                    * 1000.0,
            )),
            Shape::Rectangle { .. } | Shape::Polygon(_) => {
                // The shoelace formula, in millimetres.
                let v = self.vertices();
                let twice: f64 = (0..v.len())
                    .map(|i| {
                        let (a, b) = (v[i], v[(i + 1) % v.len()]);
                        f64::from(a.x) * f64::from(b.y) - f64::from(b.x) * f64::from(a.y)
                    })
                    .sum();
                let area_mm2 = twice.abs() / 2.0 * spacing.column_mm * spacing.row_mm;
                Some(Measure::AreaUm2(area_mm2 * 1e6))
            }
        }
    }
}

/// A slide's pixel spacing, as DICOM's Pixel Spacing gives it (row spacing first).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spacing {
    /// The distance between the centres of adjacent rows, in millimetres.
    pub row_mm: f64,
    /// The distance between the centres of adjacent columns, in millimetres.
    pub column_mm: f64,
}

impl Spacing {
    /// From DICOM's (row spacing, column spacing) pair; `None` unless both are positive.
    pub fn from_dicom(pair: [f64; 2]) -> Option<Spacing> {
        let [row_mm, column_mm] = pair;
        (row_mm.is_finite() && column_mm.is_finite() && row_mm > 0.0 && column_mm > 0.0)
            .then_some(Spacing { row_mm, column_mm })
    }
}

/// What a shape measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measure {
    LengthUm(f64),
    AreaUm2(f64),
}

/// One mark on one of the referral's slides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Annotation {
    pub slide: SlideId,
    pub shape: Shape,
    /// What the mark says (may be empty for a bare shape; a point with text is a note).
    pub text: String,
}

impl Annotation {
    /// Checks what a receiver must not trust blindly: vertex counts, finite coordinates
    /// inside the plausible range, a non-degenerate rectangle, the text's size.
    pub fn validate(&self) -> Result<(), ReferralError> {
        let kind = self.shape.kind();
        let fail = |why: String| Err(ReferralError(format!("{kind} annotation: {why}")));
        let count = match &self.shape {
            Shape::Point(_) => 1,
            Shape::Line(points) | Shape::Polygon(points) => points.len(),
            Shape::Rectangle {
                top_left: a,
                bottom_right: b,
            } => {
                if !(b.x > a.x && b.y > a.y) {
                    return fail(format!(
                        "({}, {}) to ({}, {}) is not a top-left and a bottom-right corner",
                        a.x, a.y, b.x, b.y
                    ));
                }
                4
            }
        };
        let least = match self.shape {
            Shape::Point(_) | Shape::Rectangle { .. } => 1,
            Shape::Line(_) => 2,
            Shape::Polygon(_) => 3,
        };
        if count < least || count > MAX_VERTICES {
            return fail(format!(
                "{count} vertices; {least} to {MAX_VERTICES} expected"
            ));
        }
        let vertices = self.shape.vertices();
        if let Some(p) = vertices.iter().find(|p| {
            !(0.0..=MAX_COORDINATE).contains(&p.x) || !(0.0..=MAX_COORDINATE).contains(&p.y)
        }) {
            return fail(format!(
                "vertex ({}, {}) is outside 0 to {MAX_COORDINATE}",
                p.x, p.y
            ));
        }
        if let Shape::Polygon(points) = &self.shape
            && points.first() == points.last()
        {
            return fail(
                "the first vertex is repeated at the end (polygons close themselves)".into(),
            );
        }
        if self.text.len() > MAX_ANNOTATION_TEXT {
            return fail(format!(
                "its text is {} bytes; at most {MAX_ANNOTATION_TEXT}",
                self.text.len()
            ));
        }
        if self
            .text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return fail("its text contains control characters".into());
        }
        Ok(())
    }

    /// Whether every vertex lies inside a `width` x `height` pixel matrix.
    pub fn fits(&self, width: u32, height: u32) -> bool {
        self.shape
            .vertices()
            .iter()
            .all(|p| p.x <= width as f32 && p.y <= height as f32)
    }
}

/// Checks a list of annotations: its length, and each one.
pub fn validate_all(annotations: &[Annotation]) -> Result<(), ReferralError> {
    if annotations.len() > MAX_ANNOTATIONS {
        return Err(ReferralError(format!(
            "{} annotations; at most {MAX_ANNOTATIONS}",
            annotations.len()
        )));
    }
    for (i, a) in annotations.iter().enumerate() {
        a.validate()
            .map_err(|e| ReferralError(format!("annotation {}: {e}", i + 1)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUARTER_UM: Spacing = Spacing {
        row_mm: 0.00025,
        column_mm: 0.00025,
    };

    fn annotation(shape: Shape) -> Annotation {
        Annotation {
            slide: SlideId::of(b"slide"),
            shape,
            text: "focus of invasion".into(),
        }
    }

    #[test]
    fn a_line_measures_its_length_in_micrometres() {
        let line = Shape::Line(vec![
            Point::new(0.0, 0.0),
            Point::new(3000.0, 4000.0),
            Point::new(3000.0, 5000.0),
        ]);
        let Some(Measure::LengthUm(um)) = line.measure(QUARTER_UM) else {
            panic!("a line has a length")
        };
        // 5000 px then 1000 px at 0.25 um each.
        assert!((um - 1500.0).abs() < 1e-6, "{um}");
    }

    #[test]
    fn rectangles_and_polygons_measure_their_area() {
        let rect = Shape::Rectangle {
            top_left: Point::new(100.0, 100.0),
            bottom_right: Point::new(500.0, 300.0),
        };
        let Some(Measure::AreaUm2(a)) = rect.measure(QUARTER_UM) else {
            panic!()
        };
        // 100 um x 50 um.
        assert!((a - 5000.0).abs() < 1e-6, "{a}");
        // The same square clockwise or anticlockwise.
        for square in [
            vec![(0., 0.), (40., 0.), (40., 40.), (0., 40.)],
            vec![(0., 0.), (0., 40.), (40., 40.), (40., 0.)],
        ] {
            let polygon =
                Shape::Polygon(square.into_iter().map(|(x, y)| Point::new(x, y)).collect());
            let Some(Measure::AreaUm2(a)) = polygon.measure(QUARTER_UM) else {
                panic!()
            };
            assert!((a - 100.0).abs() < 1e-9, "{a}");
        }
        assert_eq!(Shape::Point(Point::new(1.0, 1.0)).measure(QUARTER_UM), None);
    }

    #[test]
    fn a_rectangle_has_four_corners_clockwise_from_the_top_left() {
        let rect = Shape::Rectangle {
            top_left: Point::new(10.0, 20.0),
            bottom_right: Point::new(15.0, 23.0),
        };
        assert_eq!(
            rect.vertices(),
            vec![
                Point::new(10.0, 20.0),
                Point::new(15.0, 20.0),
                Point::new(15.0, 23.0),
                Point::new(10.0, 23.0)
            ]
        );
    }

    #[test]
    fn malformed_annotations_are_refused_with_the_reason() {
        let cases = [
            (Shape::Line(vec![Point::new(1.0, 1.0)]), "1 vertices"),
            (
                Shape::Polygon(vec![Point::new(0.0, 0.0), Point::new(1.0, 0.0)]),
                "2 vertices",
            ),
            (
                Shape::Polygon(vec![
                    Point::new(0.0, 0.0),
                    Point::new(1.0, 0.0),
                    Point::new(1.0, 1.0),
                    Point::new(0.0, 0.0),
                ]),
                "repeated",
            ),
            (Shape::Point(Point::new(f32::NAN, 1.0)), "outside"),
            (Shape::Point(Point::new(-1.0, 1.0)), "outside"),
            (Shape::Point(Point::new(1.0, f32::INFINITY)), "outside"),
            (
                Shape::Rectangle {
                    top_left: Point::new(0.0, 0.0),
                    bottom_right: Point::new(0.0, 5.0),
                },
                "not a top-left",
            ),
            (
                Shape::Line(vec![Point::new(0.0, 0.0); MAX_VERTICES + 1]),
                "vertices",
            ),
        ];
        for (shape, why) in cases {
            let e = annotation(shape.clone()).validate().unwrap_err().0;
            assert!(e.contains(why), "{shape:?}: {e}");
        }
        let mut noisy = annotation(Shape::Point(Point::new(1.0, 1.0)));
        noisy.text = "a\u{7}b".into();
        assert!(noisy.validate().is_err());
        noisy.text = "x".repeat(MAX_ANNOTATION_TEXT + 1);
        assert!(noisy.validate().is_err());
        let many = vec![annotation(Shape::Point(Point::new(1.0, 1.0))); MAX_ANNOTATIONS + 1];
        assert!(validate_all(&many).is_err());
        assert!(validate_all(&many[..MAX_ANNOTATIONS]).is_ok());
    }

    #[test]
    fn fits_checks_the_pixel_matrix() {
        let a = annotation(Shape::Point(Point::new(100.0, 50.0)));
        assert!(a.fits(100, 50));
        assert!(!a.fits(99, 50));
    }
}
