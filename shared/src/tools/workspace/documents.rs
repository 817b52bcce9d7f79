//! `extract_text_from_non_text_file` (PDF, DOCX, XLSX and the other spreadsheets calamine reads)
//! and `convert_csv_to_excel`, over files of the session's workspace.

use std::io::{Cursor, Read};

use bytes::Bytes;
use calamine::{Data, Reader};
use quick_xml::events::Event as XmlEvent;
use serde_json::{Value, json};

use super::{
    JsonObject, MAX_WRITE_BYTES, ToolCallError, WorkspaceTools, invalid, number_argument,
    store_failed, text_argument,
};

/// What one answer returns at most; the rest is read with `start_index`.
const MAX_EXTRACTED_CHARS: u64 = 100_000;
const DEFAULT_EXTRACTED_CHARS: u64 = 20_000;
/// A DOCX's document part may unpack to at most this much XML.
const MAX_DOCX_XML_BYTES: u64 = 64 * 1024 * 1024;
/// A CSV turned into a workbook has at most this many rows.
const MAX_CSV_ROWS: usize = 1_048_576;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DocumentKind {
    Pdf,
    Docx,
    Spreadsheet,
}

fn kind_of(relative: &str, bytes: &[u8]) -> Option<DocumentKind> {
    let extension = relative
        .rsplit_once('.')
        .map(|(_, extension)| extension.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "pdf" => Some(DocumentKind::Pdf),
        "docx" => Some(DocumentKind::Docx),
        "xlsx" | "xlsm" | "xlsb" | "xls" | "ods" => Some(DocumentKind::Spreadsheet),
        _ if bytes.starts_with(b"%PDF-") => Some(DocumentKind::Pdf),
        _ => None,
    }
}

#[cfg(feature = "pdf")]
fn pdf_text(bytes: &[u8]) -> Result<String, String> {
    pdf_extract::extract_text_from_mem(bytes).map_err(|error| error.to_string())
}

#[cfg(not(feature = "pdf"))]
fn pdf_text(_bytes: &[u8]) -> Result<String, String> {
    Err("this build reads no PDF files (cargo feature `pdf`)".to_owned())
}

/// The text of a DOCX's main document: paragraphs on their own lines, tabs and breaks kept.
fn docx_text(bytes: &[u8]) -> Result<String, String> {
    let mut archive =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|_| "not a DOCX (zip) file".to_owned())?;
    let part = archive
        .by_name("word/document.xml")
        .map_err(|_| "no word/document.xml: not a Word document".to_owned())?;
    let mut xml = Vec::new();
    part.take(MAX_DOCX_XML_BYTES + 1)
        .read_to_end(&mut xml)
        .map_err(|_| "the document cannot be unpacked".to_owned())?;
    if xml.len() as u64 > MAX_DOCX_XML_BYTES {
        return Err("the document unpacks to more than 64 MiB".to_owned());
    }
    let mut reader = quick_xml::Reader::from_reader(xml.as_slice());
    let mut buffer = Vec::new();
    let mut text = String::new();
    let mut in_text = false;
    loop {
        match reader.read_event_into(&mut buffer) {
            Ok(XmlEvent::Start(element)) if element.name().as_ref() == "w:t" => in_text = true,
            Ok(XmlEvent::End(element)) => match element.name().as_ref() {
                "w:t" => in_text = false,
                "w:p" => text.push('\n'),
                _ => {}
            },
            Ok(XmlEvent::Empty(element)) => match element.name().as_ref() {
                "w:tab" => text.push('\t'),
                "w:br" | "w:cr" => text.push('\n'),
                _ => {}
            },
            Ok(XmlEvent::Text(chunk)) if in_text => text.push_str(&chunk.xml10_content()),
            Ok(XmlEvent::GeneralRef(reference)) if in_text => {
                if let Ok(Some(resolved)) = reference.resolve_char_ref() {
                    text.push(resolved);
                } else {
                    text.push_str(match reference.borrow().into_inner().as_ref() {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        "apos" => "'",
                        _ => "",
                    });
                }
            }
            Ok(XmlEvent::Eof) => break,
            Err(_) => return Err("the document's XML is broken".to_owned()),
            _ => {}
        }
        buffer.clear();
    }
    Ok(text)
}

/// Every sheet as `## name` then its rows, cells separated by tabs.
fn spreadsheet_text(bytes: &[u8]) -> Result<String, String> {
    let mut workbook = calamine::open_workbook_auto_from_rs(Cursor::new(bytes))
        .map_err(|error| format!("not a readable spreadsheet: {error}"))?;
    let mut text = String::new();
    for name in workbook.sheet_names() {
        let Ok(range) = workbook.worksheet_range(&name) else {
            continue;
        };
        text.push_str(&format!("## {name}\n"));
        for row in range.rows() {
            let cells: Vec<String> = row
                .iter()
                .map(|cell| match cell {
                    Data::Empty => String::new(),
                    other => other.to_string(),
                })
                .collect();
            text.push_str(cells.join("\t").trim_end());
            text.push('\n');
        }
        text.push('\n');
    }
    Ok(text)
}

/// A CSV cell as the workbook stores it: numbers and booleans as such, the rest as text.
fn write_cell(
    sheet: &mut rust_xlsxwriter::Worksheet,
    row: u32,
    column: u16,
    cell: &str,
) -> Result<(), rust_xlsxwriter::XlsxError> {
    let trimmed = cell.trim();
    if let Ok(number) = trimmed.parse::<f64>()
        && number.is_finite()
        && !trimmed.is_empty()
        && !(trimmed.len() > 1 && trimmed.starts_with('0') && !trimmed.starts_with("0."))
    {
        sheet.write_number(row, column, number)?;
    } else if trimmed.eq_ignore_ascii_case("true") || trimmed.eq_ignore_ascii_case("false") {
        sheet.write_boolean(row, column, trimmed.eq_ignore_ascii_case("true"))?;
    } else if !cell.is_empty() {
        sheet.write_string(row, column, cell)?;
    }
    Ok(())
}

fn workbook_of(csv_text: &str) -> Result<(Vec<u8>, usize, usize), String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(csv_text.trim_start_matches('\u{feff}').as_bytes());
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet = workbook.add_worksheet();
    let mut rows = 0;
    let mut columns = 0;
    for (index, record) in reader.records().enumerate() {
        let record = record.map_err(|error| format!("line {}: {error}", index + 1))?;
        if index >= MAX_CSV_ROWS {
            return Err(format!("a worksheet holds at most {MAX_CSV_ROWS} rows"));
        }
        if record.len() > usize::from(u16::MAX) {
            return Err(format!("line {}: too many columns", index + 1));
        }
        columns = columns.max(record.len());
        for (column, cell) in record.iter().enumerate() {
            write_cell(sheet, index as u32, column as u16, cell)
                .map_err(|error| format!("line {}: {error}", index + 1))?;
        }
        rows += 1;
    }
    let bytes = workbook
        .save_to_buffer()
        .map_err(|error| format!("the workbook cannot be written: {error}"))?;
    Ok((bytes, rows, columns))
}

impl WorkspaceTools {
    pub(super) async fn extract_text(
        &self,
        arguments: &JsonObject,
    ) -> Result<Value, ToolCallError> {
        let (key, relative) = self.path_of(text_argument(arguments, "input_file_path")?)?;
        let bytes = self
            .read_bytes(&key)
            .await?
            .ok_or_else(|| invalid(format!("no file {relative} in the workspace")))?;
        let kind = kind_of(&relative, &bytes).ok_or_else(|| {
            invalid(format!(
                "{relative}: only PDF, DOCX and spreadsheet (XLSX, XLS, ODS) files are read; \
                 use file_read for text files"
            ))
        })?;
        let extracted = tokio::task::spawn_blocking(move || match kind {
            DocumentKind::Pdf => pdf_text(&bytes),
            DocumentKind::Docx => docx_text(&bytes),
            DocumentKind::Spreadsheet => spreadsheet_text(&bytes),
        })
        .await
        .map_err(|_| invalid(format!("{relative} could not be read")))?
        .map_err(|reason| invalid(format!("{relative}: {reason}")))?;
        let total = extracted.chars().count() as u64;
        let start = number_argument(arguments, "start_index")?.unwrap_or(0);
        let length = number_argument(arguments, "max_length")?
            .unwrap_or(DEFAULT_EXTRACTED_CHARS)
            .clamp(1, MAX_EXTRACTED_CHARS);
        let text: String = extracted
            .chars()
            .skip(start as usize)
            .take(length as usize)
            .collect();
        let end = start + text.chars().count() as u64;
        let mut answer = json!({
            "file_path": relative,
            "text": text,
            "start_index": start,
            "end_index": end,
            "total_length": total,
        });
        if end < total {
            answer["note"] = json!(format!("more text follows; read on with start_index {end}"));
        }
        Ok(answer)
    }

    pub(super) async fn csv_to_excel(
        &self,
        arguments: &JsonObject,
    ) -> Result<Value, ToolCallError> {
        let (_, csv_relative, csv_text) = self
            .read_text(text_argument(arguments, "csv_file_path")?)
            .await?;
        let target = match arguments.get("excel_file_path").and_then(Value::as_str) {
            Some(path) if !path.trim().is_empty() => path.to_owned(),
            _ => match csv_relative.rsplit_once('.') {
                Some((stem, _)) => format!("{stem}.xlsx"),
                None => format!("{csv_relative}.xlsx"),
            },
        };
        let (excel_key, excel_relative) = self.path_of(&target)?;
        if !excel_relative.to_ascii_lowercase().ends_with(".xlsx") {
            return Err(invalid("`excel_file_path` must end in .xlsx"));
        }
        let (bytes, rows, columns) = tokio::task::spawn_blocking(move || workbook_of(&csv_text))
            .await
            .map_err(|_| invalid(format!("{csv_relative} could not be converted")))?
            .map_err(|reason| invalid(format!("{csv_relative}: {reason}")))?;
        if bytes.len() > MAX_WRITE_BYTES {
            return Err(invalid(format!(
                "the workbook would be {} bytes; files written by these tools hold at most \
                 {MAX_WRITE_BYTES} bytes",
                bytes.len()
            )));
        }
        let size = bytes.len();
        self.objects
            .put(&excel_key, Bytes::from(bytes))
            .await
            .map_err(store_failed)?;
        Ok(json!({
            "csv_file_path": csv_relative,
            "excel_file_path": excel_relative,
            "rows": rows,
            "columns": columns,
            "size": size,
            "success": true,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csv_round_trips_through_a_workbook() {
        let (bytes, rows, columns) =
            workbook_of("\u{feff}name,qty,code,ok\n\"Smith, J\",3.5,007,true\nx\n").unwrap();
        assert_eq!((rows, columns), (3, 4));
        let text = spreadsheet_text(&bytes).unwrap();
        assert_eq!(
            text,
            "## Sheet1\nname\tqty\tcode\tok\nSmith, J\t3.5\t007\ttrue\nx\n\n"
        );
    }

    #[test]
    fn documents_are_recognised_by_extension_or_signature() {
        assert_eq!(kind_of("a.PDF", b""), Some(DocumentKind::Pdf));
        assert_eq!(kind_of("scan", b"%PDF-1.7"), Some(DocumentKind::Pdf));
        assert_eq!(kind_of("r.docx", b""), Some(DocumentKind::Docx));
        assert_eq!(kind_of("t.ods", b""), Some(DocumentKind::Spreadsheet));
        assert_eq!(kind_of("notes.txt", b"hello"), None);
        assert!(docx_text(b"not a zip").is_err());
    }
}
