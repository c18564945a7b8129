// format.js: owns how numbers, sizes, dates and ids are shown to people (en-GB conventions).

const numberFormat = new Intl.NumberFormat('en-GB');

export function formatCount(n) {
  return Number.isFinite(n) ? numberFormat.format(n) : null;
}

/** Decimal units (kB, MB, GB) as storage is usually quoted. */
export function formatBytes(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return null;
  const units = ['bytes', 'kB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return unit === 0 ? `${value} bytes` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

export function formatDimensions(width, height) {
  if (!Number.isFinite(width) || !Number.isFinite(height)) return null;
  return `${numberFormat.format(width)} × ${numberFormat.format(height)} px`;
}

const dateTimeFormat = new Intl.DateTimeFormat('en-GB', { dateStyle: 'medium', timeStyle: 'short' });
const dateFormat = new Intl.DateTimeFormat('en-GB', { dateStyle: 'medium' });

/**
 * Acquisition date-times come from DICOM without a zone ("2026-03-04T10:11:12"); they are the
 * scanner's local time, so they are parsed and shown as local time. Unparseable input is shown as is.
 */
export function formatAcquired(value) {
  if (!value) return null;
  const dateOnly = /^\d{4}-\d{2}-\d{2}$/.test(value);
  const parsed = new Date(dateOnly ? `${value}T00:00:00` : value);
  if (Number.isNaN(parsed.getTime())) return String(value);
  return (dateOnly ? dateFormat : dateTimeFormat).format(parsed);
}

/** Micrometres per pixel from a DICOM pixel spacing in millimetres. */
export function formatSpacing(spacingMm) {
  if (!Array.isArray(spacingMm) || !Number.isFinite(spacingMm[0])) return null;
  const [row, col = row] = spacingMm.map((mm) => mm * 1000);
  const show = (um) => `${Number(um.toPrecision(3))}`;
  return Math.abs(row - col) < 1e-9 ? `${show(row)} µm/px` : `${show(col)} × ${show(row)} µm/px`;
}

/** Slide ids are 64 hex characters; cards show a prefix, like a short git hash. */
export function shortId(id) {
  return typeof id === 'string' && id.length > 12 ? `${id.slice(0, 12)}…` : id;
}

/** The human title of a slide, from its stain and site (there is no slide name in DICOM WSI). */
export function slideTitle(slide) {
  const parts = [slide.stain, slide.anatomic_site].filter(Boolean);
  return parts.length ? parts.join(' · ') : 'Unlabelled slide';
}
