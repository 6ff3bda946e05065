//! Format-preserving steps on the `toml_edit` tree. Values are replaced in
//! place (keeping the comment on their line and the lines above their key),
//! tables keep the form the file gives them (`[section]` or `{ inline }`),
//! and arrays of tables may be `[[sections]]` or an inline array.

use std::ops::{Deref, DerefMut};

use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, TableLike, Value};

use super::EditError;

/// How to write a table the file does not have yet.
#[derive(Debug, Clone, Copy)]
pub(super) enum Form {
    /// A `[parent.key]` section (inline anyway inside an inline table).
    Section,
    /// `key = { ... }`.
    Inline,
}

/// A table of the document in the form the file writes it: the two need
/// different care when keys are added or removed.
pub(super) enum Node<'t> {
    /// A `[section]`, a `[[section]]` entry, or the document root.
    Section(&'t mut Table),
    /// `{ ... }`.
    Inline(&'t mut InlineTable),
}

impl<'t> Node<'t> {
    fn of(item: &'t mut Item) -> Option<Self> {
        match item {
            Item::Table(table) => Some(Self::Section(table)),
            Item::Value(Value::InlineTable(table)) => Some(Self::Inline(table)),
            _ => None,
        }
    }

    /// A shorter-lived handle on the same table, to look inside it and keep it.
    pub(super) fn reborrow(&mut self) -> Node<'_> {
        match self {
            Self::Section(table) => Node::Section(table),
            Self::Inline(table) => Node::Inline(table),
        }
    }
}

impl<'t> Deref for Node<'t> {
    type Target = dyn TableLike + 't;

    fn deref(&self) -> &Self::Target {
        match self {
            Self::Section(table) => &**table,
            Self::Inline(table) => &**table,
        }
    }
}

impl DerefMut for Node<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Self::Section(table) => &mut **table,
            Self::Inline(table) => &mut **table,
        }
    }
}

/// The `[[models]]` entry with this id.
pub(super) fn model<'d>(doc: &'d mut DocumentMut, id: &str) -> Result<Node<'d>, EditError> {
    entry(Node::Section(doc.as_table_mut()), "models", "id", id)
        .ok_or_else(|| EditError::NotFound(format!("model `{id}`")))
}

/// The entry of `parent[array]` whose `field` is the string `value`.
pub(super) fn entry<'t>(
    parent: Node<'t>,
    array: &str,
    field: &str,
    value: &str,
) -> Option<Node<'t>> {
    Entries::of(parent, array)?.find(field, value)
}

/// Appends `entry` to `parent[array]`, creating the array when missing.
/// New `[[sections]]` have no position of their own, so they print right
/// after the previous entry of the same array: inside the right `[[models]]`.
pub(super) fn push_entry(parent: &mut Node<'_>, array: &str, entry: Table) {
    entries_or_insert(parent, array).insert(None, entry);
}

/// Inserts `entry` as the first element of `parent[array]`.
pub(super) fn insert_first_entry(parent: &mut Node<'_>, array: &str, entry: Table) {
    entries_or_insert(parent, array).insert(Some(0), entry);
}

/// Removes the entry of `parent[array]` whose `field` is `value` (with the
/// comment lines above its header); drops the key once the array is empty.
pub(super) fn remove_entry(parent: &mut Node<'_>, array: &str, field: &str, value: &str) {
    let Some(mut entries) = Entries::of(parent.reborrow(), array) else {
        return;
    };
    let Some(index) = entries.position(field, value) else {
        return;
    };
    if entries.remove(index) == 0 {
        remove(parent, array);
    }
}

/// Sets `key` to `value`. An existing value is replaced in place, keeping
/// its spacing and the comment on its line (`Table::insert` would reset the
/// key, dropping the comment lines above it).
pub(super) fn set(table: &mut Node<'_>, key: &str, value: impl Into<Value>) {
    let mut value = value.into();
    match table.get_mut(key) {
        Some(Item::Value(old)) => {
            *value.decor_mut() = old.decor().clone();
            keep_comment_column(old, &mut value);
            *old = value;
        }
        Some(other) => *other = Item::Value(value),
        None => insert_new(table, key, Item::Value(value)),
    }
}

/// Sets each of `values` in `table`, keeping its other keys.
pub(super) fn merge(table: &mut Node<'_>, values: Vec<(String, Value)>) {
    for (key, value) in values {
        set(table, &key, value);
    }
}

/// Removes `key` (with the comment lines above it and on its line).
pub(super) fn remove(table: &mut Node<'_>, key: &str) {
    match table {
        Node::Section(table) => {
            table.remove(key);
        }
        Node::Inline(table) => {
            let was_last = table.iter().last().is_some_and(|(k, _)| k == key);
            let Some(mut removed) = table.remove(key) else {
                return;
            };
            // The space before `}` went with the removed value: hand it back.
            if was_last && let Some((_, last)) = table.iter_mut().last() {
                move_trailing_space(&mut removed, last);
            }
        }
    }
}

/// The table under `key`, created in `form` when missing.
pub(super) fn child<'t>(mut parent: Node<'t>, key: &str, form: Form) -> Node<'t> {
    if !parent.get(key).is_some_and(Item::is_table_like) {
        let new = match form {
            // Inserted into an inline table, a `Table` becomes inline.
            Form::Section => Item::Table(Table::new()),
            Form::Inline => Item::Value(Value::InlineTable(InlineTable::new())),
        };
        insert_new(&mut parent, key, new);
    }
    let item = match parent {
        Node::Section(table) => table.get_mut(key),
        Node::Inline(table) => TableLike::get_mut(table, key),
    };
    item.and_then(Node::of).expect("the table was just ensured")
}

/// Makes the table under `key` hold exactly `values`: kept keys change in
/// place and the table keeps its form; a missing table is created in `form`.
pub(super) fn replace_table(
    parent: &mut Node<'_>,
    key: &str,
    values: Vec<(String, Value)>,
    form: Form,
) {
    let mut table = child(parent.reborrow(), key, form);
    let stale: Vec<String> = table
        .iter()
        .map(|(k, _)| k.to_owned())
        .filter(|k| !values.iter().any(|(new, _)| new == k))
        .collect();
    for k in stale {
        remove(&mut table, &k);
    }
    merge(&mut table, values);
}

/// A copy of `item` without its own comments and spacing, to reuse a value
/// elsewhere without duplicating the comments that describe the original.
pub(super) fn without_decor(item: &Item) -> Item {
    let mut item = item.clone();
    match &mut item {
        Item::Value(value) => value.decor_mut().clear(),
        Item::Table(table) => {
            table.decor_mut().clear();
            table.set_position(None);
            table.fmt();
        }
        Item::ArrayOfTables(_) | Item::None => {}
    }
    item
}

/// Adds a key the table does not have, after its other keys.
fn insert_new(table: &mut Node<'_>, key: &str, item: Item) {
    match table {
        Node::Section(table) => {
            table.insert(key, item);
        }
        Node::Inline(table) => {
            let Ok(mut value) = item.into_value() else {
                return;
            };
            // The space before `}` belongs to the last value: hand it on.
            if let Some((_, last)) = table.iter_mut().last() {
                move_trailing_space(last, &mut value);
            }
            table.insert(key, value);
        }
    }
}

/// Moves `from`'s suffix to `to` when it is only spaces (never a comment).
fn move_trailing_space(from: &mut Value, to: &mut Value) {
    let Some(space) = from.decor().suffix().and_then(|s| s.as_str()) else {
        return;
    };
    if space.trim().is_empty() {
        let space = space.to_owned();
        from.decor_mut().set_suffix("");
        to.decor_mut().set_suffix(space);
    }
}

/// Pads or trims the spaces before a trailing `# comment` by the change in
/// the value's width, so aligned comments stay aligned.
fn keep_comment_column(old: &Value, new: &mut Value) {
    let Some(suffix) = new.decor().suffix().and_then(|s| s.as_str()) else {
        return;
    };
    let comment = suffix.trim_start_matches(' ');
    if !comment.starts_with('#') {
        return;
    }
    let spaces = suffix.len() - comment.len();
    let width = |v: &Value| {
        let mut bare = v.clone();
        bare.decor_mut().clear();
        bare.to_string().chars().count()
    };
    let spaces = (spaces + width(old)).saturating_sub(width(new)).max(1);
    let suffix = format!("{}{comment}", " ".repeat(spaces));
    new.decor_mut().set_suffix(suffix);
}

fn entries_or_insert<'t>(parent: &'t mut Node<'_>, array: &str) -> Entries<'t> {
    if Entries::of(parent.reborrow(), array).is_none() {
        // Into an inline table, this becomes an inline array.
        insert_new(parent, array, Item::ArrayOfTables(ArrayOfTables::new()));
    }
    Entries::of(parent.reborrow(), array).expect("the array was just ensured")
}

/// An array of tables as the file writes it.
enum Entries<'t> {
    /// `[[parent.array]]` sections.
    Sections(&'t mut ArrayOfTables),
    /// `array = [{ ... }, { ... }]`.
    Inline(&'t mut Array),
}

impl<'t> Entries<'t> {
    fn of(parent: Node<'t>, array: &str) -> Option<Self> {
        let item = match parent {
            Node::Section(table) => table.get_mut(array)?,
            Node::Inline(table) => TableLike::get_mut(table, array)?,
        };
        match item {
            Item::ArrayOfTables(tables) => Some(Self::Sections(tables)),
            Item::Value(Value::Array(values)) => Some(Self::Inline(values)),
            _ => None,
        }
    }

    fn position(&self, field: &str, value: &str) -> Option<usize> {
        let matches =
            |table: &dyn TableLike| table.get(field).and_then(Item::as_str) == Some(value);
        match self {
            Self::Sections(tables) => tables.iter().position(|t| matches(t)),
            Self::Inline(values) => values
                .iter()
                .position(|v| v.as_inline_table().is_some_and(|t| matches(t))),
        }
    }

    fn find(self, field: &str, value: &str) -> Option<Node<'t>> {
        let index = self.position(field, value)?;
        match self {
            Self::Sections(tables) => tables.get_mut(index).map(Node::Section),
            Self::Inline(values) => values
                .get_mut(index)
                .and_then(Value::as_inline_table_mut)
                .map(Node::Inline),
        }
    }

    /// Inserts at `index`, or appends when `None`.
    fn insert(self, index: Option<usize>, entry: Table) {
        match self {
            Self::Sections(tables) => match index {
                Some(i) => tables.insert(i, entry),
                None => tables.push(entry),
            },
            Self::Inline(values) => {
                let mut entry = Value::InlineTable(entry.into_inline_table());
                // One entry per line if the array has them so.
                let neighbour = match index {
                    Some(_) => values.iter().next(),
                    None => values.iter().last(),
                };
                if let Some(indent) = neighbour.and_then(line_indent) {
                    entry.decor_mut().set_prefix(indent);
                }
                match index {
                    Some(i) => values.insert_formatted(i, entry),
                    None => values.push_formatted(entry),
                }
            }
        }
    }

    /// Removes the entry at `index`; returns how many are left.
    fn remove(&mut self, index: usize) -> usize {
        match self {
            Self::Sections(tables) => {
                tables.remove(index);
                tables.len()
            }
            Self::Inline(values) => {
                values.remove(index);
                values.len()
            }
        }
    }
}

/// `"\n"` and the indentation before `value`, if it starts a line.
fn line_indent(value: &Value) -> Option<String> {
    let prefix = value.decor().prefix()?.as_str()?;
    prefix.rfind('\n').map(|i| prefix[i..].to_owned())
}
