// What a text/event-stream body holds: its events in order, each with its data.

/** `event: x\ndata: y\n\n` blocks → [{ event, data }] (an event without a name is 'message'). */
export function parseSse(text: string): Array<{ event: string; data: string }> {
  return text
    .split('\n\n')
    .filter((b) => b.trim() !== '')
    .map((block) => {
      const lines = block.split('\n');
      const event = lines.find((l) => l.startsWith('event: '))?.slice(7) ?? 'message';
      const data = lines.filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
      return { event, data };
    });
}
