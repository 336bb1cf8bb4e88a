// A JSON transform: keeps the fields named in `pick` (all when absent) of each record,
// then renames them by `rename` ({ old: new }).
//   event: { "record": {...} } or { "records": [{...}, ...] }, plus "pick"? and "rename"?
const { pick, rename } = require('./lib/fields.js');

exports.handler = async (event) => {
  const spec = event ?? {};
  const apply = (r) => rename(pick(r, spec.pick), spec.rename ?? {});
  if (Array.isArray(spec.records)) return { records: spec.records.map(apply) };
  if (spec.record !== undefined) return { record: apply(spec.record) };
  throw new TypeError('event must have "record" (an object) or "records" (an array of objects)');
};
