// A path of an image as the sandbox rooted in it would resolve it, looked up from the host
// in the image's unpacked tree. Every symlink is followed inside the tree, never out of
// it: an image's `/bin -> /usr/bin` (absolute, as merged-/usr images have) must lead to the
// image's /usr/bin, not the host's. Used to find a command in the image's PATH and to check
// that a catalog language's image has the programs its steps run.
import { lstatSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

/** Most symlinks one lookup follows (the kernel's own limit for a path walk). */
const MAX_LINKS = 40;

/** Whether `path` (absolute, as seen inside the image) names an existing non-directory in the tree at `rootfs`. */
export function existsInImage(rootfs: string, path: string): boolean {
  if (!path.startsWith('/')) return false;
  const todo = path.split('/').filter((c) => c !== '' && c !== '.');
  const done: string[] = [];
  let links = 0;
  while (todo.length > 0) {
    const c = todo.shift()!;
    if (c === '..') {
      done.pop(); // `..` of the root is the root, as in a chroot
      continue;
    }
    let st;
    try {
      st = lstatSync(join(rootfs, ...done, c));
    } catch {
      return false; // absent: the sandbox would not find it either
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_LINKS) return false;
      const target = readlinkSync(join(rootfs, ...done, c));
      if (target.startsWith('/')) done.length = 0;
      todo.unshift(...target.split('/').filter((x) => x !== '' && x !== '.'));
      continue;
    }
    if (todo.length > 0 && !st.isDirectory()) return false;
    if (todo.length === 0) return !st.isDirectory();
    done.push(c);
  }
  return false; // the path was the root itself: a directory
}
